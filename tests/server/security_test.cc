// Transport security and access control over real loopback gRPC: TLS and mutual TLS with
// certificates the openssl command makes at run time, their reload, API keys, tenant isolation of
// sessions, tenant limits, and the keys file's parser.
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "absl/strings/escaping.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "grpcpp/create_channel.h"
#include "grpcpp/security/credentials.h"
#include "gtest/gtest.h"
#include "server/core/access_control.h"
#include "server/server.h"
#include "server/tls.h"
#include "tests/server/test_client.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

using ::testing::HasSubstr;
using ::testing::Not;

std::string ReadText(const std::filesystem::path& path) {
  std::ifstream in(path, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

void WriteText(const std::filesystem::path& path, const std::string& text) {
  std::ofstream(path, std::ios::binary) << text;
}

// Certificates made by the openssl command: CAs "a" and "b" (unrelated), "c" (for a reload), a
// server certificate of each for localhost and 127.0.0.1, and a client certificate of each.
class Pki {
 public:
  Pki() : dir_(testing::MakeTempDir()) {
    for (const char* ca : {"a", "b", "c"}) {
      Run(
          absl::StrCat("openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes "
                       "-days 2 -subj /CN=hgrn2-test-ca-",
                       ca, " -keyout ", Path(ca, "ca.key"), " -out ", Path(ca, "ca.pem")));
      Issue(ca, "server", "subjectAltName=DNS:localhost,IP:127.0.0.1");
      Issue(ca, "client", "extendedKeyUsage=clientAuth");
    }
  }
  // e.g. Path("a", "server.pem")
  std::string Path(const std::string& ca, const std::string& name) const {
    return (dir_ / absl::StrCat(ca, "-", name)).string();
  }
  std::string Read(const std::string& ca, const std::string& name) const {
    return ReadText(Path(ca, name));
  }

  // Channel credentials trusting CA `trusted`, with the client certificate of CA `client_of`
  // (none when empty).
  std::shared_ptr<grpc::ChannelCredentials> Credentials(const std::string& trusted,
                                                        const std::string& client_of = "") const {
    grpc::SslCredentialsOptions options;
    options.pem_root_certs = Read(trusted, "ca.pem");
    if (!client_of.empty()) {
      options.pem_private_key = Read(client_of, "client.key");
      options.pem_cert_chain = Read(client_of, "client.pem");
    }
    return grpc::SslCredentials(options);
  }

 private:
  static void Run(const std::string& command) {
    const int status = std::system((command + " 2>/dev/null").c_str());
    ASSERT_EQ(status, 0) << command;
  }
  void Issue(const std::string& ca, const std::string& name, const std::string& extension) {
    const std::string ext = Path(ca, name + ".ext");
    WriteText(ext, extension + "\n");
    Run(
        absl::StrCat("openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "
                     "/CN=",
                     name == "server" ? "localhost" : "hgrn2-test-client-" + ca, " -keyout ",
                     Path(ca, name + ".key"), " -out ", Path(ca, name + ".csr")));
    Run(absl::StrCat("openssl x509 -req -days 2 -in ", Path(ca, name + ".csr"), " -CA ",
                     Path(ca, "ca.pem"), " -CAkey ", Path(ca, "ca.key"),
                     " -CAcreateserial -extfile ", ext, " -out ", Path(ca, name + ".pem")));
  }

  std::filesystem::path dir_;
};

// One GetModelInfo over `channel`: its status.
grpc::Status Info(const std::shared_ptr<grpc::Channel>& channel) {
  grpc::ClientContext context;
  context.set_deadline(absl::ToChronoTime(absl::Now() + absl::Seconds(5)));
  v1::GetModelInfoRequest request;
  v1::ModelInfo info;
  return v1::Inference::NewStub(channel)->GetModelInfo(&context, request, &info);
}

// Until `channel` answers GetModelInfo with OK or `timeout` passes; whether it did.
bool AnswersWithin(const std::function<std::shared_ptr<grpc::Channel>()>& channel,
                   absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (absl::Now() < deadline) {
    if (Info(channel()).ok()) return true;
    std::this_thread::sleep_for(std::chrono::milliseconds(50));
  }
  return false;
}

std::string Sha256Hex(const std::string& key) {
  const KeyHash hash = HashApiKey(key);
  return absl::BytesToHexString(
      absl::string_view(reinterpret_cast<const char*>(hash.data()), hash.size()));
}

class SecurityTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() { pki_ = new Pki(); }
  static void TearDownTestSuite() {
    delete pki_;
    pki_ = nullptr;
  }

  void StartServer(const ServerOptions& options) {
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
    ASSERT_TRUE(server.ok()) << server.status();
    server_ = *std::move(server);
  }
  static ServerOptions Options() {
    ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
    options.engine.prefix_cache_bytes = 0;
    return options;
  }
  ServerOptions TlsOptionsOf(const std::string& ca) const {
    ServerOptions options = Options();
    options.tls.cert_file = pki_->Path(ca, "server.pem");
    options.tls.key_file = pki_->Path(ca, "server.key");
    return options;
  }
  std::shared_ptr<grpc::Channel> Channel(std::shared_ptr<grpc::ChannelCredentials> credentials,
                                         const std::string& api_key = "") const {
    return TestChannel(server_->port(), std::move(credentials), api_key);
  }

  static Pki* pki_;
  std::unique_ptr<Server> server_;
};

Pki* SecurityTest::pki_ = nullptr;

// A client trusting the server's CA talks TLS to it; one trusting another CA, or talking
// plaintext, gets nothing.
TEST_F(SecurityTest, TlsServesClientsThatTrustItsCa) {
  StartServer(TlsOptionsOf("a"));
  EXPECT_TRUE(Info(Channel(pki_->Credentials("a"))).ok());
  const grpc::Status wrong_ca = Info(Channel(pki_->Credentials("b")));
  EXPECT_EQ(wrong_ca.error_code(), grpc::StatusCode::UNAVAILABLE) << wrong_ca.error_message();
  const grpc::Status plaintext = Info(Channel(grpc::InsecureChannelCredentials()));
  EXPECT_EQ(plaintext.error_code(), grpc::StatusCode::UNAVAILABLE) << plaintext.error_message();
  // Health is served on the same port, over TLS too.
  Client client(Channel(pki_->Credentials("a")));
  EXPECT_EQ(client.Health(""), HealthCheckResponse::SERVING);
}

// With a client CA, a client must show a certificate that CA signed.
TEST_F(SecurityTest, MutualTlsRequiresAClientCertificateOfTheClientCa) {
  ServerOptions options = TlsOptionsOf("a");
  options.tls.client_ca_file = pki_->Path("a", "ca.pem");
  StartServer(options);
  EXPECT_TRUE(Info(Channel(pki_->Credentials("a", "a"))).ok());
  const grpc::Status no_certificate = Info(Channel(pki_->Credentials("a")));
  EXPECT_EQ(no_certificate.error_code(), grpc::StatusCode::UNAVAILABLE);
  const grpc::Status other_ca = Info(Channel(pki_->Credentials("a", "b")));
  EXPECT_EQ(other_ca.error_code(), grpc::StatusCode::UNAVAILABLE);
}

// Reload serves the new files at the configured paths; a bad new pair is refused with the old
// one still served.
TEST_F(SecurityTest, ReloadReplacesTheCertificateAndKeepsTheOldOneWhenTheNewIsBad) {
  const std::filesystem::path dir = testing::MakeTempDir();
  ServerOptions options = Options();
  options.tls.cert_file = (dir / "cert.pem").string();
  options.tls.key_file = (dir / "key.pem").string();
  WriteText(options.tls.cert_file, pki_->Read("a", "server.pem"));
  WriteText(options.tls.key_file, pki_->Read("a", "server.key"));
  StartServer(options);
  ASSERT_TRUE(Info(Channel(pki_->Credentials("a"))).ok());
  ASSERT_FALSE(Info(Channel(pki_->Credentials("c"))).ok());

  WriteText(options.tls.cert_file, pki_->Read("c", "server.pem"));
  WriteText(options.tls.key_file, pki_->Read("c", "server.key"));
  ASSERT_TRUE(server_->Reload().ok());
  EXPECT_TRUE(AnswersWithin([&] { return Channel(pki_->Credentials("c")); }, absl::Seconds(10)));
  EXPECT_FALSE(Info(Channel(pki_->Credentials("a"))).ok());

  // A key that is not the certificate's, then a file that is not a certificate.
  WriteText(options.tls.cert_file, pki_->Read("a", "server.pem"));
  WriteText(options.tls.key_file, pki_->Read("b", "server.key"));
  const absl::Status mismatched = server_->Reload();
  EXPECT_TRUE(absl::IsInvalidArgument(mismatched)) << mismatched;
  EXPECT_THAT(mismatched.message(), HasSubstr("does not belong to the certificate"));
  WriteText(options.tls.cert_file, "not a certificate\n");
  const absl::Status garbage = server_->Reload();
  EXPECT_THAT(garbage.message(), HasSubstr("no PEM certificate"));
  // Past a refresh of the watcher, the reloaded pair is still what is served.
  std::this_thread::sleep_for(std::chrono::seconds(ServingTls::kRefreshSeconds + 1));
  EXPECT_TRUE(Info(Channel(pki_->Credentials("c"))).ok());
  EXPECT_FALSE(Info(Channel(pki_->Credentials("a"))).ok());
}

// Reload also replaces the client CA: certificates of the new one get in, of the old one not.
TEST_F(SecurityTest, ReloadReplacesTheClientCa) {
  const std::filesystem::path client_ca = testing::MakeTempDir() / "client-ca.pem";
  WriteText(client_ca, pki_->Read("a", "ca.pem"));
  ServerOptions options = TlsOptionsOf("a");
  options.tls.client_ca_file = client_ca.string();
  StartServer(options);
  ASSERT_TRUE(Info(Channel(pki_->Credentials("a", "a"))).ok());
  ASSERT_FALSE(Info(Channel(pki_->Credentials("a", "b"))).ok());

  WriteText(client_ca, pki_->Read("b", "ca.pem"));
  ASSERT_TRUE(server_->Reload().ok());
  EXPECT_TRUE(
      AnswersWithin([&] { return Channel(pki_->Credentials("a", "b")); }, absl::Seconds(10)));
  EXPECT_FALSE(Info(Channel(pki_->Credentials("a", "a"))).ok());

  WriteText(client_ca, "-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n");
  const absl::Status bad = server_->Reload();
  EXPECT_TRUE(absl::IsInvalidArgument(bad)) << bad;
  EXPECT_THAT(bad.message(), HasSubstr("--tls-client-ca"));
  EXPECT_TRUE(Info(Channel(pki_->Credentials("a", "b"))).ok());
}

// Bad files fail the start, naming the flag; the checks themselves.
TEST_F(SecurityTest, BadCertificatesFailTheStartAndTheChecksSayWhy) {
  ServerOptions mismatched = TlsOptionsOf("a");
  mismatched.tls.key_file = pki_->Path("b", "server.key");
  absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(mismatched);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("--tls-cert"));
  EXPECT_THAT(server.status().message(), HasSubstr("does not belong"));

  ServerOptions missing = TlsOptionsOf("a");
  missing.tls.client_ca_file = "/nonexistent/ca.pem";
  server = Server::Start(missing);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("--tls-client-ca /nonexistent/ca.pem"));

  ServerOptions ca_only = Options();
  ca_only.tls.client_ca_file = pki_->Path("a", "ca.pem");
  server = Server::Start(ca_only);
  ASSERT_FALSE(server.ok());
  EXPECT_THAT(server.status().message(), HasSubstr("--tls-client-ca needs --tls-cert"));

  absl::StatusOr<std::string> good =
      CheckIdentity(pki_->Read("a", "server.pem"), pki_->Read("a", "server.key"));
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_THAT(*good, HasSubstr("CN = localhost"));
  EXPECT_THAT(*good, HasSubstr("hgrn2-test-ca-a"));
  const absl::StatusOr<std::string> no_key = CheckIdentity(pki_->Read("a", "server.pem"), "x");
  EXPECT_THAT(no_key.status().message(), HasSubstr("no usable PEM private key"));
  const std::filesystem::path encrypted = testing::MakeTempDir() / "encrypted.key";
  ASSERT_EQ(std::system(absl::StrCat("openssl pkey -in ", pki_->Path("a", "server.key"),
                                     " -aes256 -passout pass:secret -out ", encrypted.string(),
                                     " 2>/dev/null")
                            .c_str()),
            0);
  const absl::StatusOr<std::string> locked =
      CheckIdentity(pki_->Read("a", "server.pem"), ReadText(encrypted));
  EXPECT_THAT(locked.status().message(), HasSubstr("an encrypted key is not supported"));
  EXPECT_EQ(CheckCaBundle(pki_->Read("a", "ca.pem") + pki_->Read("b", "ca.pem")).value_or(0), 2);
  EXPECT_FALSE(CheckCaBundle("").ok());
}

// The keys file of the API key tests: tenants "acme" and "lab", each with one key.
struct KeysFile {
  std::filesystem::path path;
  std::string acme_key = "acme-secret-key-1";
  std::string lab_key = "lab-secret-key-2";
};

KeysFile WriteKeys(const std::string& acme_limits, const std::string& lab_limits = "{}") {
  KeysFile keys;
  keys.path = testing::MakeTempDir() / "keys.json";
  WriteText(keys.path,
            absl::StrCat(R"({"tenants": {"acme": )", acme_limits, R"(, "lab": )", lab_limits,
                         R"(}, "keys": [{"sha256": ")", Sha256Hex(keys.acme_key),
                         R"(", "tenant": "acme"}, )", R"({"sha256": ")", Sha256Hex(keys.lab_key),
                         R"(", "tenant": "lab", "name": "ci"}]})"));
  return keys;
}

// A missing, malformed or unknown key is UNAUTHENTICATED (never repeating the key); a known one
// is let in; health stays open; refusals are counted by reason.
TEST_F(SecurityTest, ApiKeysAreRequiredOnEveryServiceButHealth) {
  const KeysFile keys = WriteKeys("{}");
  ServerOptions options = Options();
  options.api_keys_file = keys.path.string();
  options.metrics_port = testing::FreeLoopbackPort();
  StartServer(options);

  const grpc::Status missing = Info(Channel(nullptr));
  EXPECT_EQ(missing.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(missing.error_message(), HasSubstr("no API key"));
  const grpc::Status wrong = Info(Channel(nullptr, "not-the-key"));
  EXPECT_EQ(wrong.error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_THAT(wrong.error_message(), HasSubstr("not recognized"));
  EXPECT_THAT(wrong.error_message(), Not(HasSubstr("not-the-key")));
  {
    grpc::ClientContext context;
    context.AddMetadata("authorization", "Basic " + keys.acme_key);
    v1::ModelInfo info;
    const grpc::Status basic = Client(Channel(nullptr)).stub().GetModelInfo(&context, {}, &info);
    EXPECT_EQ(basic.error_code(), grpc::StatusCode::UNAUTHENTICATED);
    EXPECT_THAT(basic.error_message(), HasSubstr("not \"Bearer <key>\""));
    EXPECT_THAT(basic.error_message(), Not(HasSubstr(keys.acme_key)));
  }
  EXPECT_TRUE(Info(Channel(nullptr, keys.acme_key)).ok());

  // Every Inference and Sessions RPC asks.
  Client anonymous(Channel(nullptr));
  EXPECT_EQ(anonymous.Generate(IdsRequest({1, 2}, 2)).status.error_code(),
            grpc::StatusCode::UNAUTHENTICATED);
  v1::ScoreResponse score;
  v1::ScoreRequest score_request;
  score_request.mutable_continuation_ids()->add_ids(5);
  EXPECT_EQ(anonymous.Score(score_request, &score).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  {
    grpc::ClientContext context;
    v1::ListSessionsResponse list;
    EXPECT_EQ(anonymous.sessions().ListSessions(&context, {}, &list).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  {
    grpc::ClientContext context;
    v1::DetokenizeRequest request;
    v1::DetokenizeResponse response;
    EXPECT_EQ(anonymous.stub().Detokenize(&context, request, &response).error_code(),
              grpc::StatusCode::UNAUTHENTICATED);
  }
  // Health needs no key.
  EXPECT_EQ(anonymous.Health(""), HealthCheckResponse::SERVING);
  EXPECT_EQ(anonymous.Health("hgrn2.v1.Inference"), HealthCheckResponse::SERVING);

  const std::string scrape = Scrape(server_->metrics_port());
  EXPECT_GE(
      MetricValue(scrape,
                  R"(hgrn2_refused_calls_total{model_name="tiny-a",reason="missing_api_key"})"),
      5);
  EXPECT_EQ(
      MetricValue(scrape,
                  R"(hgrn2_refused_calls_total{model_name="tiny-a",reason="unknown_api_key"})"),
      1);
  EXPECT_EQ(
      MetricValue(scrape,
                  R"(hgrn2_refused_calls_total{model_name="tiny-a",reason="malformed_api_key"})"),
      1);
  EXPECT_THAT(scrape, Not(HasSubstr(keys.acme_key)));
  EXPECT_THAT(scrape, Not(HasSubstr("not-the-key")));
}

grpc::Status GetSession(Client& client, const std::string& id, v1::SessionInfo* info) {
  grpc::ClientContext context;
  v1::GetSessionRequest request;
  request.set_session_id(id);
  return client.sessions().GetSession(&context, request, info);
}

grpc::Status Export(Client& client, const std::string& id, std::string* data) {
  grpc::ClientContext context;
  v1::ExportSessionRequest request;
  request.set_session_id(id);
  auto reader = client.sessions().ExportSession(&context, request);
  v1::SessionChunk chunk;
  data->clear();
  while (reader->Read(&chunk)) *data += chunk.data();
  return reader->Finish();
}

grpc::Status Import(Client& client, const std::string& id, const std::string& data) {
  grpc::ClientContext context;
  v1::SessionInfo info;
  auto writer = client.sessions().ImportSession(&context, &info);
  v1::SessionChunk chunk;
  chunk.set_session_id(id);
  chunk.set_data(data);
  writer->Write(chunk);
  writer->WritesDone();
  return writer->Finish();
}

std::vector<std::string> List(Client& client) {
  grpc::ClientContext context;
  v1::ListSessionsResponse response;
  const grpc::Status status = client.sessions().ListSessions(&context, {}, &response);
  EXPECT_TRUE(status.ok()) << status.error_message();
  std::vector<std::string> ids;
  for (const v1::SessionInfo& info : response.sessions()) ids.push_back(info.session_id());
  return ids;
}

grpc::Status Delete(Client& client, const std::string& id) {
  grpc::ClientContext context;
  v1::DeleteSessionRequest request;
  request.set_session_id(id);
  v1::DeleteSessionResponse response;
  return client.sessions().DeleteSession(&context, request, &response);
}

// One tenant cannot see, load, export, overwrite, list or delete another's sessions: the same id
// names a different session in each tenant.
TEST_F(SecurityTest, TenantsCannotReachEachOthersSessions) {
  const KeysFile keys = WriteKeys("{}");
  ServerOptions options = Options();
  options.api_keys_file = keys.path.string();
  StartServer(options);
  Client acme(Channel(nullptr, keys.acme_key));
  Client lab(Channel(nullptr, keys.lab_key));

  v1::GenerateRequest save = IdsRequest({5, 6, 7}, 4);
  save.set_ignore_eos(true);
  save.set_save_session_as("chat");
  ASSERT_TRUE(acme.Generate(save).status.ok());
  v1::SessionInfo acme_info;
  ASSERT_TRUE(GetSession(acme, "chat", &acme_info).ok());
  EXPECT_EQ(acme_info.num_tokens(), 7u);

  v1::SessionInfo info;
  EXPECT_EQ(GetSession(lab, "chat", &info).error_code(), grpc::StatusCode::NOT_FOUND);
  std::string data;
  EXPECT_EQ(Export(lab, "chat", &data).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(List(lab).empty());
  EXPECT_EQ(Delete(lab, "chat").error_code(), grpc::StatusCode::NOT_FOUND);
  v1::GenerateRequest resume = IdsRequest({8}, 2);
  resume.set_session_id("chat");
  const Client::Stream resumed = lab.Generate(resume);
  EXPECT_EQ(resumed.status.error_code(), grpc::StatusCode::NOT_FOUND);
  v1::ScoreRequest score = [] {
    v1::ScoreRequest request;
    request.set_session_id("chat");
    request.mutable_continuation_ids()->add_ids(9);
    return request;
  }();
  v1::ScoreResponse scored;
  EXPECT_EQ(lab.Score(score, &scored).error_code(), grpc::StatusCode::NOT_FOUND);
  EXPECT_TRUE(acme.Score(score, &scored).ok());

  // lab saves and imports under the same id: its own sessions; acme's is untouched.
  v1::GenerateRequest lab_save = IdsRequest({1, 2}, 10);
  lab_save.set_ignore_eos(true);
  lab_save.set_save_session_as("chat");
  ASSERT_TRUE(lab.Generate(lab_save).status.ok());
  ASSERT_TRUE(GetSession(lab, "chat", &info).ok());
  EXPECT_EQ(info.num_tokens(), 12u);
  ASSERT_TRUE(Export(acme, "chat", &data).ok());
  ASSERT_TRUE(Import(lab, "copy", data).ok());
  EXPECT_EQ(List(lab), (std::vector<std::string>{"chat", "copy"}));
  EXPECT_EQ(List(acme), (std::vector<std::string>{"chat"}));
  ASSERT_TRUE(GetSession(acme, "chat", &info).ok());
  EXPECT_EQ(info.num_tokens(), 7u);
  ASSERT_TRUE(Delete(lab, "chat").ok());
  EXPECT_TRUE(GetSession(acme, "chat", &info).ok());
}

// A tenant at max_concurrent_requests is refused with RESOURCE_EXHAUSTED until a call ends (also
// by cancellation, or by an error); other tenants are not.
TEST_F(SecurityTest, ConcurrencyLimitHoldsUntilTheCallEnds) {
  const KeysFile keys = WriteKeys(R"({"max_concurrent_requests": 1})");
  ServerOptions options = Options();
  options.api_keys_file = keys.path.string();
  StartServer(options);
  Client acme(Channel(nullptr, keys.acme_key));
  Client lab(Channel(nullptr, keys.lab_key));

  // Errors and refusals give the slot back.
  v1::GenerateRequest bad = IdsRequest({1, 2}, 2);
  bad.mutable_sampling()->set_top_p(7.0f);
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(acme.Generate(bad).status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  }

  v1::GenerateRequest endless = IdsRequest({1, 2, 3}, 100000);
  endless.set_ignore_eos(true);
  grpc::ClientContext context;
  auto reader = acme.stub().Generate(&context, endless);
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));  // admitted and running

  const grpc::Status refused = Info(Channel(nullptr, keys.acme_key));
  EXPECT_EQ(refused.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.error_message(), HasSubstr("max_concurrent_requests 1"));
  EXPECT_THAT(refused.error_message(), HasSubstr("\"acme\""));
  EXPECT_TRUE(Info(Channel(nullptr, keys.lab_key)).ok());

  context.TryCancel();
  while (reader->Read(&message)) {
  }
  EXPECT_EQ(reader->Finish().error_code(), grpc::StatusCode::CANCELLED);
  // The slot comes back when the server has finished the call.
  EXPECT_TRUE(AnswersWithin([&] { return Channel(nullptr, keys.acme_key); }, absl::Seconds(10)));
}

// Past tokens_per_minute (prompt and generated tokens), a tenant's next call is refused; other
// tenants are not.
TEST_F(SecurityTest, TokensPerMinuteLimitRefusesTheNextCall) {
  const KeysFile keys = WriteKeys(R"({"tokens_per_minute": 50})", R"({"tokens_per_minute": 1000})");
  ServerOptions options = Options();
  options.api_keys_file = keys.path.string();
  options.metrics_port = testing::FreeLoopbackPort();
  options.metrics_tenant_limit = 10;  // refusals by tenant
  StartServer(options);
  Client acme(Channel(nullptr, keys.acme_key));
  Client lab(Channel(nullptr, keys.lab_key));

  v1::GenerateRequest small = IdsRequest({1, 2, 3}, 10);  // 13 tokens
  small.set_ignore_eos(true);
  ASSERT_TRUE(acme.Generate(small).status.ok());
  ASSERT_TRUE(acme.Generate(small).status.ok());  // 26 tokens: under 50
  v1::GenerateRequest large = IdsRequest({1, 2, 3}, 40);
  large.set_ignore_eos(true);
  ASSERT_TRUE(acme.Generate(large).status.ok());  // admitted at 26, ends at 69

  const Client::Stream refused = acme.Generate(small);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("tokens_per_minute 50"));
  EXPECT_THAT(refused.status.error_message(), HasSubstr("used 69 tokens"));
  v1::ScoreRequest score;
  score.mutable_continuation_ids()->add_ids(4);
  v1::ScoreResponse response;
  EXPECT_EQ(acme.Score(score, &response).error_code(), grpc::StatusCode::RESOURCE_EXHAUSTED);
  // Scoring counts too: lab's 3 scored tokens and 13 generated add up.
  score.mutable_continuation_ids()->add_ids(5);
  score.mutable_continuation_ids()->add_ids(6);
  EXPECT_TRUE(lab.Score(score, &response).ok());
  EXPECT_TRUE(lab.Generate(small).status.ok());

  const std::string scrape = Scrape(server_->metrics_port());
  EXPECT_EQ(
      MetricValue(
          scrape,
          R"(hgrn2_refused_calls_total{model_name="tiny-a",reason="tokens_per_minute",tenant="acme"})"),
      2);
  EXPECT_EQ(
      MetricValue(
          scrape,
          R"(hgrn2_refused_calls_total{model_name="tiny-a",reason="tokens_per_minute",tenant="lab"})"),
      -1);
}

// The token window: one-second steps over the last 60 seconds.
TEST(TenantUsageTest, TokensPerMinuteIsARollingMinute) {
  TenantUsage usage({.tokens_per_minute = 100});
  const absl::Time start = absl::FromUnixSeconds(1'000'000);
  usage.Charge(60, start);
  usage.Charge(30, start + absl::Seconds(30));
  EXPECT_EQ(usage.TokensInLastMinute(start + absl::Seconds(59)), 90);
  EXPECT_EQ(usage.TokensInLastMinute(start + absl::Seconds(60)), 30);  // the first left
  EXPECT_EQ(usage.TokensInLastMinute(start + absl::Seconds(90)), 0);
  usage.Charge(100, start + absl::Seconds(100));
  absl::string_view reached;
  const absl::Status refused = usage.TryBegin("t", start + absl::Seconds(159), reached);
  EXPECT_TRUE(absl::IsResourceExhausted(refused));
  EXPECT_EQ(reached, "tokens_per_minute");
  EXPECT_TRUE(usage.TryBegin("t", start + absl::Seconds(160), reached).ok());
  EXPECT_EQ(usage.active(), 1);
}

// SIGHUP's reload of the keys: a new file replaces the keys; a bad one leaves them as they were.
TEST_F(SecurityTest, KeysReloadReplacesKeysAndKeepsThemWhenTheFileIsBad) {
  const KeysFile keys = WriteKeys("{}");
  ServerOptions options = Options();
  options.api_keys_file = keys.path.string();
  StartServer(options);
  ASSERT_TRUE(Info(Channel(nullptr, keys.acme_key)).ok());

  WriteText(keys.path, R"({"tenants": {"acme": {}}, "keys": [{"sha256": ")" + Sha256Hex("rotated") +
                           R"(", "tenant": "acme"}]})");
  ASSERT_TRUE(server_->Reload().ok());
  EXPECT_EQ(Info(Channel(nullptr, keys.acme_key)).error_code(), grpc::StatusCode::UNAUTHENTICATED);
  EXPECT_TRUE(Info(Channel(nullptr, "rotated")).ok());

  WriteText(keys.path,
            R"({"tenants": {"acme": {}}, "keys": [{"sha256": "abc", "tenant": "acme"}]})");
  const absl::Status bad = server_->Reload();
  EXPECT_TRUE(absl::IsInvalidArgument(bad));
  EXPECT_THAT(bad.message(), HasSubstr("keys[0].sha256"));
  EXPECT_TRUE(Info(Channel(nullptr, "rotated")).ok());
}

// Each mistake in a keys file is named.
TEST(ApiKeysParserTest, NamesTheBadEntry) {
  const std::string hash = Sha256Hex("k");
  const std::string key = R"({"sha256": ")" + hash + R"(", "tenant": "a"})";
  struct Case {
    std::string json;
    std::string message;
  };
  const std::vector<Case> cases = {
      {"{", "not valid JSON"},
      {"[]", "expected a JSON object"},
      {R"({"keys": [)" + key + "]}", "tenants: expected an object"},
      {R"({"tenants": {"a": {}}, "keys": []})", "keys: expected an array of one key or more"},
      {R"({"tenants": {"a": {}}, "keys": [)" + key + R"(], "extra": 1})", "extra: unknown field"},
      {R"({"tenants": {"a b": {}}, "keys": [)" + key + "]}", "tenants.a b: a tenant name"},
      {R"({"tenants": {"a": 3}, "keys": [)" + key + "]}", "tenants.a: expected an object"},
      {R"({"tenants": {"a": {"max_concurent_requests": 2}}, "keys": [)" + key + "]}",
       "tenants.a.max_concurent_requests: unknown limit"},
      {R"({"tenants": {"a": {"tokens_per_minute": -1}}, "keys": [)" + key + "]}",
       "tenants.a.tokens_per_minute: expected an integer >= 0"},
      {R"({"tenants": {"a": {"tokens_per_minute": 1.5}}, "keys": [)" + key + "]}",
       "tenants.a.tokens_per_minute: expected an integer"},
      {R"({"tenants": {"a": {}}, "keys": [3]})", "keys[0]: expected {"},
      {R"({"tenants": {"a": {}}, "keys": [{"tenant": "a"}]})", "keys[0].sha256: missing"},
      {R"({"tenants": {"a": {}}, "keys": [{"sha256": "my-plaintext-key", "tenant": "a"}]})",
       "keys[0].sha256: expected 64 hex digits (the SHA-256 of the key), got 16 characters"},
      {R"({"tenants": {"a": {}}, "keys": [{"sha256": ")" + hash + R"("}]})",
       "keys[0].tenant: expected the name of a tenant"},
      {R"({"tenants": {"a": {}}, "keys": [{"sha256": ")" + hash + R"(", "tenant": "b"}]})",
       "keys[0].tenant: \"b\" is not in tenants"},
      {R"({"tenants": {"a": {}}, "keys": [)" + key + "," + key + "]}",
       "keys[1].sha256: the same key as keys[0]"},
      {R"({"tenants": {"a": {}}, "keys": [{"sha256": ")" + hash +
           R"(", "tenant": "a", "key": 1}]})",
       "keys[0].key: unknown field"},
  };
  for (const Case& c : cases) {
    const absl::StatusOr<ApiKeyConfig> parsed = ParseApiKeys(c.json);
    ASSERT_FALSE(parsed.ok()) << c.json;
    EXPECT_TRUE(absl::IsInvalidArgument(parsed.status()));
    EXPECT_THAT(parsed.status().message(), HasSubstr(c.message)) << c.json;
    EXPECT_THAT(parsed.status().message(), Not(HasSubstr("my-plaintext-key")));
  }
  const absl::StatusOr<ApiKeyConfig> good = ParseApiKeys(
      R"({"tenants": {"a": {"max_concurrent_requests": 3, "tokens_per_minute": 0}}, "keys": [)" +
      key + "]}");
  ASSERT_TRUE(good.ok()) << good.status();
  EXPECT_EQ(good->tenants.at("a").max_concurrent_requests, 3);
  ASSERT_EQ(good->keys.size(), 1u);
  EXPECT_EQ(good->keys[0].first, HashApiKey("k"));

  const absl::StatusOr<ApiKeyConfig> unreadable = LoadApiKeys("/nonexistent/keys.json");
  EXPECT_THAT(unreadable.status().message(), HasSubstr("--api-keys /nonexistent/keys.json"));
}

}  // namespace
}  // namespace hgrn2::server
