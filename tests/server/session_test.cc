// Sessions through the public gRPC API (CPU backend, fixture models): exact resumption for greedy
// and seeded sampling, forks, scoring on a session, export and import between servers, every
// corruption of an import, concurrent saves, the dir store across a restart, n samples sharing
// one prefill, the prefix cache, the session metrics, and listing sessions a page at a time.
#include <algorithm>
#include <filesystem>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "engine/session/snapshot.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "server/server.h"
#include "tests/server/test_client.h"
#include "tests/support/test_support.h"

namespace hgrn2::server {
namespace {

using ::testing::HasSubstr;

std::vector<int32_t> Concat(std::initializer_list<std::vector<int32_t>> parts) {
  std::vector<int32_t> out;
  for (const std::vector<int32_t>& part : parts) out.insert(out.end(), part.begin(), part.end());
  return out;
}

std::vector<float> Logprobs(const Client::Stream& stream) {
  std::vector<float> out;
  for (const v1::GenerateResponse& message : stream.messages) {
    for (const v1::TokenLogprob& logprob : message.logprobs()) out.push_back(logprob.logprob());
  }
  return out;
}

// Sampling of the resumption tests: greedy, or seeded with top-k and top-p.
v1::GenerateRequest Request(const std::vector<int32_t>& prompt, uint32_t max_new_tokens,
                            bool seeded) {
  v1::GenerateRequest request = IdsRequest(prompt, max_new_tokens);
  request.set_ignore_eos(true);
  if (seeded) {
    request.mutable_sampling()->set_temperature(0.9f);
    request.mutable_sampling()->set_top_k(50);
    request.mutable_sampling()->set_top_p(0.95f);
    request.mutable_sampling()->set_seed(4242);
  } else {
    request.mutable_sampling()->set_temperature(0.0f);
  }
  return request;
}

grpc::Status GetSession(Client& client, const std::string& id, v1::SessionInfo* info) {
  grpc::ClientContext context;
  v1::GetSessionRequest request;
  request.set_session_id(id);
  return client.sessions().GetSession(&context, request, info);
}

// The whole exported snapshot, or the status.
grpc::Status Export(Client& client, const std::string& id, std::string* data) {
  grpc::ClientContext context;
  v1::ExportSessionRequest request;
  request.set_session_id(id);
  auto reader = client.sessions().ExportSession(&context, request);
  v1::SessionChunk chunk;
  data->clear();
  bool first = true;
  while (reader->Read(&chunk)) {
    EXPECT_EQ(chunk.session_id(), first ? id : "");
    EXPECT_LE(chunk.data().size(), SessionsService::kChunkBytes);
    first = false;
    *data += chunk.data();
  }
  return reader->Finish();
}

// Sends `data` in chunks of `chunk_bytes` under `id` (with `if_revision` in the first).
grpc::Status Import(Client& client, const std::string& id, const std::string& data,
                    v1::SessionInfo* info, size_t chunk_bytes = 1000,
                    std::optional<uint64_t> if_revision = std::nullopt) {
  grpc::ClientContext context;
  auto writer = client.sessions().ImportSession(&context, info);
  size_t offset = 0;
  do {
    v1::SessionChunk chunk;
    if (offset == 0) chunk.set_session_id(id);
    if (offset == 0 && if_revision.has_value()) chunk.set_if_revision(*if_revision);
    const size_t n = std::min(chunk_bytes, data.size() - offset);
    chunk.set_data(data.substr(offset, n));
    offset += n;
    if (!writer->Write(chunk)) break;
  } while (offset < data.size());
  writer->WritesDone();
  return writer->Finish();
}

class SessionTest : public ::testing::Test {
 protected:
  ServerOptions Options() {
    ServerOptions options = TestOptions(testing::TestDataDir() / "tiny-a");
    options.engine.prefix_cache_bytes = 0;  // the prefix cache has its own test
    return options;
  }
  std::unique_ptr<Server> Start(const ServerOptions& options) {
    absl::StatusOr<std::unique_ptr<Server>> server = Server::Start(options);
    EXPECT_TRUE(server.ok()) << server.status();
    return server.ok() ? *std::move(server) : nullptr;
  }
};

// Generate on A and save; continue with B: the same tokens and log-probabilities as one request
// on A + the generated tokens + B. Greedy and seeded; the session's token count adds up.
TEST_F(SessionTest, ResumingGivesExactlyTheUninterruptedRun) {
  std::unique_ptr<Server> server = Start(Options());
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  const std::vector<int32_t> a = {5, 17, 301, 44, 9, 120, 77};
  const std::vector<int32_t> b = {300, 2, 18, 41};
  for (bool seeded : {false, true}) {
    const std::string id = seeded ? "chat.seeded" : "chat.greedy";
    v1::GenerateRequest first = Request(a, 9, seeded);
    first.set_save_session_as(id);
    const Client::Stream one = client.Generate(first);
    ASSERT_TRUE(one.status.ok()) << one.status.error_message();
    ASSERT_EQ(one.ids.size(), 9u);

    v1::GenerateRequest second = Request(b, 11, seeded);
    second.set_session_id(id);
    second.set_save_session_as(id);
    const Client::Stream two = client.Generate(second);
    ASSERT_TRUE(two.status.ok()) << two.status.error_message();
    EXPECT_EQ(two.messages.back().usage().prompt_tokens(), b.size());

    const Client::Stream whole = client.Generate(Request(Concat({a, one.ids, b}), 11, seeded));
    ASSERT_TRUE(whole.status.ok()) << whole.status.error_message();
    EXPECT_EQ(two.ids, whole.ids) << (seeded ? "seeded" : "greedy");
    EXPECT_EQ(Logprobs(two), Logprobs(whole)) << (seeded ? "seeded" : "greedy");

    v1::SessionInfo info;
    ASSERT_TRUE(GetSession(client, id, &info).ok());
    EXPECT_EQ(info.num_tokens(), a.size() + 9 + b.size() + 11);
    EXPECT_EQ(info.session_id(), id);
    EXPECT_GT(info.size_bytes(), 0u);
    EXPECT_EQ(info.state_dtype(), "f32");
    EXPECT_FALSE(info.model_fingerprint().empty());

    // An empty prompt goes on generating from where the session stopped.
    v1::GenerateRequest third = Request({}, 5, seeded);
    third.clear_token_ids();
    third.set_session_id(id);
    const Client::Stream three = client.Generate(third);
    ASSERT_TRUE(three.status.ok()) << three.status.error_message();
    const Client::Stream whole3 =
        client.Generate(Request(Concat({a, one.ids, b, two.ids}), 5, seeded));
    EXPECT_EQ(three.ids, whole3.ids);
  }
}

// Saving under another id forks: the original is unchanged and both go on independently.
TEST_F(SessionTest, ForkLeavesTheOriginalUnchanged) {
  std::unique_ptr<Server> server = Start(Options());
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  v1::GenerateRequest start = Request({7, 8, 9, 10}, 6, false);
  start.set_save_session_as("root");
  const Client::Stream root = client.Generate(start);
  ASSERT_TRUE(root.status.ok());
  v1::GenerateRequest fork = Request({100, 101}, 6, false);
  fork.set_session_id("root");
  fork.set_save_session_as("branch");
  ASSERT_TRUE(client.Generate(fork).status.ok());
  // "root" still continues as if the fork never happened.
  v1::GenerateRequest again = Request({200}, 6, false);
  again.set_session_id("root");
  const Client::Stream from_root = client.Generate(again);
  const Client::Stream whole =
      client.Generate(Request(Concat({{7, 8, 9, 10}, root.ids, {200}}), 6, false));
  EXPECT_EQ(from_root.ids, whole.ids);
  v1::SessionInfo root_info, branch_info;
  ASSERT_TRUE(GetSession(client, "root", &root_info).ok());
  ASSERT_TRUE(GetSession(client, "branch", &branch_info).ok());
  EXPECT_EQ(root_info.num_tokens(), 10u);
  EXPECT_EQ(branch_info.num_tokens(), 18u);
  // List, delete, and the deleted one is gone.
  grpc::ClientContext list_context;
  v1::ListSessionsResponse list;
  ASSERT_TRUE(client.sessions().ListSessions(&list_context, {}, &list).ok());
  ASSERT_EQ(list.sessions_size(), 2);
  EXPECT_EQ(list.sessions(0).session_id(), "branch");
  EXPECT_EQ(list.sessions(1).session_id(), "root");
  grpc::ClientContext delete_context;
  v1::DeleteSessionRequest remove;
  remove.set_session_id("branch");
  v1::DeleteSessionResponse removed;
  ASSERT_TRUE(client.sessions().DeleteSession(&delete_context, remove, &removed).ok());
  v1::SessionInfo gone;
  EXPECT_EQ(GetSession(client, "branch", &gone).error_code(), grpc::StatusCode::NOT_FOUND);
  grpc::ClientContext again_context;
  EXPECT_EQ(client.sessions().DeleteSession(&again_context, remove, &removed).error_code(),
            grpc::StatusCode::NOT_FOUND);
}

// ListSessions gives a page at a time: at most page_size sessions by id and a token for the
// next page; 0 asks for the default page (100); a negative size or a token the server did not
// give is INVALID_ARGUMENT.
TEST_F(SessionTest, ListSessionsPagesThroughEverySession) {
  std::unique_ptr<Server> server = Start(Options());
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  v1::GenerateRequest start = Request({7, 8, 9}, 1, false);
  start.set_save_session_as("s000");
  ASSERT_TRUE(client.Generate(start).status.ok());
  std::string snapshot;
  ASSERT_TRUE(Export(client, "s000", &snapshot).ok());
  std::vector<std::string> saved = {"s000"};
  for (int i = 1; i <= 100; ++i) {
    saved.push_back(absl::StrFormat("s%03d", i));
    v1::SessionInfo info;
    ASSERT_TRUE(Import(client, saved.back(), snapshot, &info, snapshot.size()).ok());
  }
  auto list = [&](int32_t page_size, const std::string& token, v1::ListSessionsResponse* out) {
    grpc::ClientContext context;
    v1::ListSessionsRequest request;
    request.set_page_size(page_size);
    request.set_page_token(token);
    out->Clear();
    return client.sessions().ListSessions(&context, request, out);
  };
  std::vector<std::string> listed;
  std::string token;
  int pages = 0;
  do {
    v1::ListSessionsResponse page;
    const grpc::Status status = list(7, token, &page);
    ASSERT_TRUE(status.ok()) << status.error_message();
    EXPECT_LE(page.sessions_size(), 7);
    for (const v1::SessionInfo& info : page.sessions()) listed.push_back(info.session_id());
    token = page.next_page_token();
  } while (!token.empty() && ++pages < 100);
  EXPECT_EQ(listed, saved);
  EXPECT_EQ(pages, 14);  // 15 pages: 14 of 7 and one of 3

  v1::ListSessionsResponse page;
  ASSERT_TRUE(list(0, "", &page).ok());
  ASSERT_EQ(page.sessions_size(), 100);
  EXPECT_EQ(page.sessions(99).session_id(), "s099");
  ASSERT_TRUE(list(0, page.next_page_token(), &page).ok());
  ASSERT_EQ(page.sessions_size(), 1);
  EXPECT_EQ(page.sessions(0).session_id(), "s100");
  EXPECT_EQ(page.next_page_token(), "");
  ASSERT_TRUE(list(1 << 30, "", &page).ok());  // more than the most: a page of the most
  EXPECT_EQ(page.sessions_size(), 101);
  EXPECT_EQ(page.next_page_token(), "");

  const grpc::Status negative = list(-1, "", &page);
  EXPECT_EQ(negative.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(negative.error_message(), HasSubstr("page_size is -1"));
  const grpc::Status forged = list(5, "../s001", &page);
  EXPECT_EQ(forged.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(forged.error_message(), HasSubstr("page_token"));
}

// Score on a session equals scoring the session's whole history as context; every continuation
// token is scored; the session is not changed.
TEST_F(SessionTest, ScoringOnASessionConditionsOnItsHistory) {
  std::unique_ptr<Server> server = Start(Options());
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  const std::vector<int32_t> a = {11, 12, 13, 14, 15};
  v1::GenerateRequest start = Request(a, 7, false);
  start.set_save_session_as("doc");
  const Client::Stream generated = client.Generate(start);
  ASSERT_TRUE(generated.status.ok());
  const std::vector<int32_t> continuation = {33, 2, 400, 401};

  v1::ScoreRequest on_session;
  on_session.set_session_id("doc");
  for (int32_t id : continuation) on_session.mutable_continuation_ids()->add_ids(id);
  v1::ScoreResponse scored;
  ASSERT_TRUE(client.Score(on_session, &scored).ok());
  EXPECT_EQ(scored.unscored_tokens(), 0u);
  ASSERT_EQ(scored.token_logprobs_size(), 4);

  v1::ScoreRequest whole;
  for (int32_t id : Concat({a, generated.ids})) whole.mutable_context_ids()->add_ids(id);
  for (int32_t id : continuation) whole.mutable_continuation_ids()->add_ids(id);
  v1::ScoreResponse want;
  ASSERT_TRUE(client.Score(whole, &want).ok());
  for (int i = 0; i < 4; ++i) {
    EXPECT_NEAR(scored.token_logprobs(i), want.token_logprobs(i), 1e-5) << i;
  }
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(client, "doc", &info).ok());
  EXPECT_EQ(info.num_tokens(), a.size() + 7);
}

// A session exported from one server and imported into another continues there exactly as it
// would have on the first. Imports that are not whole, intact snapshots of this model are
// refused with their own codes, and store nothing.
TEST_F(SessionTest, ExportImportBetweenServersAndCorruptImports) {
  std::unique_ptr<Server> first = Start(Options());
  std::unique_ptr<Server> second = Start(Options());
  ASSERT_NE(first, nullptr);
  ASSERT_NE(second, nullptr);
  Client one(first->port()), two(second->port());
  v1::GenerateRequest start = Request({1, 2, 3, 4, 5, 6}, 8, true);
  start.set_save_session_as("travel");
  ASSERT_TRUE(one.Generate(start).status.ok());
  ASSERT_TRUE(one.Generate(start).status.ok());  // revision 2 (a new conversation, same id)
  std::string snapshot;
  ASSERT_TRUE(Export(one, "travel", &snapshot).ok());
  EXPECT_EQ(session::ParseHeader(snapshot)->revision, 2u);  // the export carries the revision
  v1::SessionInfo imported;
  ASSERT_TRUE(Import(two, "arrived", snapshot, &imported).ok());
  EXPECT_EQ(imported.session_id(), "arrived");
  EXPECT_EQ(imported.num_tokens(), 14u);
  EXPECT_EQ(imported.size_bytes(), snapshot.size());
  EXPECT_EQ(imported.revision(), 2u);  // kept: the session moved, its number with it
  // Over an existing session: its next revision (revisions only go up); with if_revision, a
  // compare-and-set.
  ASSERT_TRUE(Import(two, "arrived", snapshot, &imported).ok());
  EXPECT_EQ(imported.revision(), 3u);
  const grpc::Status stale = Import(two, "arrived", snapshot, &imported, 1000, 2);
  EXPECT_EQ(stale.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(stale.error_message(), HasSubstr("is at revision 3, not revision 2"));
  ASSERT_TRUE(Import(two, "arrived", snapshot, &imported, 1000, 3).ok());
  EXPECT_EQ(imported.revision(), 4u);
  const grpc::Status taken = Import(two, "arrived", snapshot, &imported, 1000, 0);
  EXPECT_EQ(taken.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(taken.error_message(), HasSubstr("already exists (revision 4)"));

  v1::GenerateRequest go_on = Request({9, 10}, 10, true);
  go_on.set_session_id("travel");
  const Client::Stream there = one.Generate(go_on);
  go_on.set_session_id("arrived");
  const Client::Stream here = two.Generate(go_on);
  ASSERT_TRUE(there.status.ok() && here.status.ok());
  EXPECT_EQ(here.ids, there.ids);
  EXPECT_EQ(Logprobs(here), Logprobs(there));

  struct Case {
    std::string name;
    std::string data;
    grpc::StatusCode code;
  };
  std::string flipped_header = snapshot;
  flipped_header[10] ^= 0x01;
  std::string flipped_payload = snapshot;
  flipped_payload[snapshot.size() / 2] ^= 0x40;
  std::string bad_magic = snapshot;
  bad_magic[0] = 'X';
  const std::vector<Case> cases = {
      {"truncated", snapshot.substr(0, snapshot.size() - 100), grpc::StatusCode::INVALID_ARGUMENT},
      {"header byte flipped", flipped_header, grpc::StatusCode::UNKNOWN},
      {"payload byte flipped", flipped_payload, grpc::StatusCode::UNKNOWN},
      {"wrong magic", bad_magic, grpc::StatusCode::INVALID_ARGUMENT},
      {"trailing bytes", snapshot + "xx", grpc::StatusCode::INVALID_ARGUMENT},
  };
  for (const Case& c : cases) {
    v1::SessionInfo info;
    const grpc::Status status = Import(two, "broken", c.data, &info);
    EXPECT_FALSE(status.ok()) << c.name;
    if (c.code != grpc::StatusCode::UNKNOWN) {
      EXPECT_EQ(status.error_code(), c.code) << c.name;
    }
    EXPECT_THAT(status.error_message(), HasSubstr("broken")) << c.name;
    v1::SessionInfo none;
    EXPECT_EQ(GetSession(two, "broken", &none).error_code(), grpc::StatusCode::NOT_FOUND) << c.name;
  }
  // Another model's session: FAILED_PRECONDITION naming the fingerprints.
  ServerOptions other = Options();
  other.model_dir = (testing::TestDataDir() / "u-k3-nolb").string();
  std::unique_ptr<Server> third = Start(other);
  ASSERT_NE(third, nullptr);
  Client three(third->port());
  v1::SessionInfo info;
  const grpc::Status foreign = Import(three, "foreign", snapshot, &info);
  EXPECT_EQ(foreign.error_code(), grpc::StatusCode::FAILED_PRECONDITION) << foreign.error_message();
  // Nothing at all, and an export of nothing.
  EXPECT_EQ(Import(two, "empty", "", &info).error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  std::string nothing;
  EXPECT_EQ(Export(two, "nobody", &nothing).error_code(), grpc::StatusCode::NOT_FOUND);
}

// Two requests saving one session at once: the second gets ABORTED; the first's save stands.
TEST_F(SessionTest, ConcurrentSavesToOneSessionAreRefused) {
  std::unique_ptr<Server> server = Start(Options());
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  v1::GenerateRequest slow = Request({1, 2, 3}, 3000, false);
  slow.set_save_session_as("busy");
  grpc::ClientContext context;
  auto reader = client.stub().Generate(&context, slow);
  // Once the first message is here, the first request holds the id (taken before it started).
  v1::GenerateResponse message;
  ASSERT_TRUE(reader->Read(&message));
  v1::GenerateRequest quick = Request({4, 5}, 2, false);
  quick.set_save_session_as("busy");
  const Client::Stream second = client.Generate(quick);
  EXPECT_EQ(second.status.error_code(), grpc::StatusCode::ABORTED) << second.status.error_message();
  while (reader->Read(&message)) {
  }
  ASSERT_TRUE(reader->Finish().ok());
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(client, "busy", &info).ok());
  EXPECT_EQ(info.num_tokens(), 3003u);
  // Once it ended, the id can be saved again.
  EXPECT_TRUE(client.Generate(quick).status.ok());
}

// Every save is the id's next revision, reported in the last message and by GetSession; a
// continuation reports the revision it resumed, a score the one it scored; save_if_revision is a
// compare-and-set (0: only a new session), refused with ABORTED naming both revisions and nothing
// changed; bad combinations are INVALID_ARGUMENT.
TEST_F(SessionTest, RevisionsCountSavesAndSaveIfRevisionIsACompareAndSet) {
  std::unique_ptr<Server> server = Start(Options());
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  auto save = [&](const std::string& resume, const std::string& save_as,
                  std::optional<uint64_t> if_revision = std::nullopt) {
    v1::GenerateRequest request = Request({7, 8, 9}, 3, false);
    if (!resume.empty()) request.set_session_id(resume);
    request.set_save_session_as(save_as);
    if (if_revision.has_value()) request.set_save_if_revision(*if_revision);
    return client.Generate(request);
  };
  const Client::Stream first = save("", "conv");
  ASSERT_TRUE(first.status.ok()) << first.status.error_message();
  EXPECT_EQ(first.messages.back().saved_revision(), 1u);
  EXPECT_EQ(first.messages.back().resumed_revision(), 0u);
  const Client::Stream second = save("conv", "conv");
  ASSERT_TRUE(second.status.ok()) << second.status.error_message();
  EXPECT_EQ(second.messages.back().resumed_revision(), 1u);
  EXPECT_EQ(second.messages.back().saved_revision(), 2u);
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(client, "conv", &info).ok());
  EXPECT_EQ(info.revision(), 2u);
  EXPECT_EQ(info.num_tokens(), 12u);

  const Client::Stream stale = save("conv", "conv", 1);
  EXPECT_EQ(stale.status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(stale.status.error_message(),
              HasSubstr("saving session \"conv\": session \"conv\" is at revision 2, not "
                        "revision 1 as this save expected"));
  ASSERT_TRUE(GetSession(client, "conv", &info).ok());
  EXPECT_EQ(info.revision(), 2u);  // nothing saved
  EXPECT_EQ(info.num_tokens(), 12u);
  const Client::Stream current = save("conv", "conv", 2);
  ASSERT_TRUE(current.status.ok()) << current.status.error_message();
  EXPECT_EQ(current.messages.back().saved_revision(), 3u);
  // 0: create only.
  const Client::Stream exists = save("", "conv", 0);
  EXPECT_EQ(exists.status.error_code(), grpc::StatusCode::ABORTED);
  EXPECT_THAT(exists.status.error_message(), HasSubstr("already exists (revision 3)"));
  const Client::Stream fresh = save("conv", "fresh", 0);
  ASSERT_TRUE(fresh.status.ok()) << fresh.status.error_message();
  EXPECT_EQ(fresh.messages.back().saved_revision(), 1u);
  // A fork to an existing id replaces it as its next revision.
  const Client::Stream fork = save("conv", "fresh");
  ASSERT_TRUE(fork.status.ok()) << fork.status.error_message();
  EXPECT_EQ(fork.messages.back().saved_revision(), 2u);

  v1::ScoreRequest score;
  score.set_session_id("conv");
  score.mutable_continuation_ids()->add_ids(5);
  v1::ScoreResponse scored;
  grpc::ClientContext context;
  ASSERT_TRUE(client.stub().Score(&context, score, &scored).ok());
  EXPECT_EQ(scored.session_revision(), 3u);

  v1::GenerateRequest bad = Request({1}, 1, false);
  bad.set_save_if_revision(1);
  Client::Stream refused = client.Generate(bad);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_EQ(refused.status.error_message(), "save_if_revision: needs save_session_as");
  bad.set_save_session_as("x");
  bad.set_save_overwrite(true);
  refused = client.Generate(bad);
  EXPECT_EQ(refused.status.error_code(), grpc::StatusCode::INVALID_ARGUMENT);
  EXPECT_THAT(refused.status.error_message(), HasSubstr("save_overwrite"));
}

// Two servers sharing one session folder (each with a memory cache): a request on one resumes a
// session; while it generates, a request on the other continues the same session; when the first
// ends its save is refused with ABORTED naming both revisions, and the other's history stands.
// With save_overwrite the same interleaving saves both, the last one winning.
TEST_F(SessionTest, AContinuationSavedElsewhereInBetweenIsNotOverwritten) {
  ServerOptions options = Options();
  options.sessions.kinds = {"memory", "dir"};
  options.sessions.dir = (testing::MakeTempDir() / "sessions").string();
  std::unique_ptr<Server> a = Start(options);
  std::unique_ptr<Server> b = Start(options);
  ASSERT_NE(a, nullptr);
  ASSERT_NE(b, nullptr);
  Client on_a(a->port()), on_b(b->port());
  v1::GenerateRequest start = Request({3, 1, 4}, 2, false);
  start.set_save_session_as("shared");
  ASSERT_TRUE(on_a.Generate(start).status.ok());
  for (bool overwrite : {false, true}) {
    v1::SessionInfo before;
    ASSERT_TRUE(GetSession(on_a, "shared", &before).ok());
    v1::GenerateRequest slow = Request({1, 5}, 3000, false);
    slow.set_session_id("shared");
    slow.set_save_session_as("shared");
    slow.set_save_overwrite(overwrite);
    grpc::ClientContext context;
    auto reader = on_a.stub().Generate(&context, slow);
    // Once the first message is here, the slow request has read the session (it reads first).
    v1::GenerateResponse message;
    ASSERT_TRUE(reader->Read(&message));
    v1::GenerateRequest quick = Request({9, 2}, 2, false);
    quick.set_session_id("shared");
    quick.set_save_session_as("shared");
    const Client::Stream elsewhere = on_b.Generate(quick);
    ASSERT_TRUE(elsewhere.status.ok()) << elsewhere.status.error_message();
    EXPECT_EQ(elsewhere.messages.back().saved_revision(), before.revision() + 1);
    v1::GenerateResponse last;
    while (reader->Read(&message)) last = message;
    const grpc::Status slow_status = reader->Finish();
    v1::SessionInfo after;
    ASSERT_TRUE(GetSession(on_a, "shared", &after).ok());
    if (!overwrite) {
      EXPECT_EQ(slow_status.error_code(), grpc::StatusCode::ABORTED);
      EXPECT_THAT(slow_status.error_message(),
                  HasSubstr(absl::StrCat("is at revision ", before.revision() + 1,
                                         ", not revision ", before.revision())));
      EXPECT_EQ(after.revision(), before.revision() + 1);
      EXPECT_EQ(after.num_tokens(), before.num_tokens() + 4);  // the quick one's history
    } else {
      ASSERT_TRUE(slow_status.ok()) << slow_status.error_message();
      EXPECT_EQ(last.saved_revision(), before.revision() + 2);
      EXPECT_EQ(after.revision(), before.revision() + 2);
      EXPECT_EQ(after.num_tokens(), before.num_tokens() + 3002);  // the slow one's
    }
  }
}

// With the dir store, a saved session survives a restart of the server.
TEST_F(SessionTest, DirStoreSurvivesARestart) {
  ServerOptions options = Options();
  options.sessions.kinds = {"memory", "dir"};
  options.sessions.dir = (testing::MakeTempDir() / "sessions").string();
  std::vector<int32_t> generated;
  {
    std::unique_ptr<Server> server = Start(options);
    ASSERT_NE(server, nullptr);
    Client client(server->port());
    v1::GenerateRequest start = Request({3, 1, 4, 1, 5}, 6, true);
    start.set_save_session_as("kept");
    const Client::Stream stream = client.Generate(start);
    ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
    generated = stream.ids;
  }
  std::unique_ptr<Server> server = Start(options);
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  v1::GenerateRequest go_on = Request({9, 2, 6}, 7, true);
  go_on.set_session_id("kept");
  const Client::Stream resumed = client.Generate(go_on);
  ASSERT_TRUE(resumed.status.ok()) << resumed.status.error_message();
  EXPECT_EQ(resumed.ids,
            client.Generate(Request(Concat({{3, 1, 4, 1, 5}, generated, {9, 2, 6}}), 7, true)).ids);
}

// n samples share one prefill: sample i equals a single request with seed + i, each ends with its
// own last message, told apart by index.
TEST_F(SessionTest, SamplesShareOnePrefill) {
  std::unique_ptr<Server> server = Start(Options());
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  v1::GenerateRequest request = Request({8, 16, 32, 64, 128}, 12, true);
  request.set_n(3);
  const Client::Stream stream = client.Generate(request);
  ASSERT_TRUE(stream.status.ok()) << stream.status.error_message();
  std::vector<std::vector<int32_t>> ids(3);
  std::vector<int> last_messages(3, 0);
  for (const v1::GenerateResponse& message : stream.messages) {
    ASSERT_LT(message.index(), 3u);
    ids[message.index()].insert(ids[message.index()].end(), message.token_ids().begin(),
                                message.token_ids().end());
    if (message.finish_reason() != v1::FINISH_REASON_UNSPECIFIED) {
      ++last_messages[message.index()];
      EXPECT_EQ(message.usage().generated_tokens(), 12u);
      EXPECT_EQ(message.usage().prompt_tokens(), 5u);
    }
  }
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(last_messages[i], 1) << i;
    v1::GenerateRequest single = Request({8, 16, 32, 64, 128}, 12, true);
    single.mutable_sampling()->set_seed(4242 + static_cast<uint64_t>(i));
    EXPECT_EQ(ids[i], client.Generate(single).ids) << "sample " << i;
  }
  EXPECT_NE(ids[0], ids[1]);
}

// The prefix cache: a prompt that extends (or repeats) a recent one reports its cached tokens and
// gives exactly what it gives without the cache.
TEST_F(SessionTest, PrefixCacheGivesTheSameTokens) {
  ServerOptions cached = Options();
  cached.engine.prefix_cache_bytes = 64 << 20;
  std::unique_ptr<Server> with = Start(cached);
  std::unique_ptr<Server> without = Start(Options());
  ASSERT_NE(with, nullptr);
  ASSERT_NE(without, nullptr);
  Client on(with->port()), off(without->port());
  std::vector<int32_t> system;
  for (int i = 0; i < 40; ++i) system.push_back((i * 37 + 11) % 500);
  const Client::Stream warm = on.Generate(Request(system, 4, true));
  ASSERT_TRUE(warm.status.ok());
  for (const std::vector<int32_t>& prompt :
       {system, Concat({system, {1, 2, 3}}), Concat({system, {400}})}) {
    const Client::Stream hit = on.Generate(Request(prompt, 8, true));
    const Client::Stream miss = off.Generate(Request(prompt, 8, true));
    ASSERT_TRUE(hit.status.ok() && miss.status.ok());
    EXPECT_EQ(hit.ids, miss.ids);
    EXPECT_EQ(Logprobs(hit), Logprobs(miss));
    EXPECT_GE(hit.messages.back().usage().cached_prompt_tokens(), system.size() - 1);
    EXPECT_EQ(miss.messages.back().usage().cached_prompt_tokens(), 0u);
  }
}

// A generation that ends at a stop string saves the state of exactly the tokens it sent (the
// engine stops at the same token), so the session resumes exactly.
TEST_F(SessionTest, StopStringSaveResumesExactly) {
  ServerOptions options = Options();
  options.model_dir =
      (testing::TestDataDir().parent_path().parent_path() / "models" / "hgrn2-demo").string();
  std::unique_ptr<Server> server = Start(options);
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  grpc::ClientContext tokenize_context;
  v1::TokenizeRequest tokenize;
  tokenize.set_text("It is a truth universally acknowledged");
  v1::TokenizeResponse prompt;
  ASSERT_TRUE(client.stub().Tokenize(&tokenize_context, tokenize, &prompt).ok());
  const std::vector<int32_t> prompt_ids(prompt.token_ids().begin(), prompt.token_ids().end());

  v1::GenerateRequest first;
  first.set_text(tokenize.text());
  first.set_max_new_tokens(60);
  first.mutable_sampling()->set_temperature(0.0f);
  first.add_stop(",");
  first.set_save_session_as("stopped");
  const Client::Stream one = client.Generate(first);
  ASSERT_TRUE(one.status.ok()) << one.status.error_message();
  ASSERT_EQ(one.messages.back().finish_reason(), v1::STOP) << "no comma in 60 tokens: " << one.text;
  EXPECT_EQ(one.messages.back().stop_string(), ",");
  v1::SessionInfo info;
  ASSERT_TRUE(GetSession(client, "stopped", &info).ok());
  EXPECT_EQ(info.num_tokens(), prompt_ids.size() + one.ids.size());

  const std::vector<int32_t> more = {310, 295, 1200};
  v1::GenerateRequest second = Request(more, 12, false);
  second.set_session_id("stopped");
  const Client::Stream resumed = client.Generate(second);
  const Client::Stream whole =
      client.Generate(Request(Concat({prompt_ids, one.ids, more}), 12, false));
  ASSERT_TRUE(resumed.status.ok() && whole.status.ok());
  EXPECT_EQ(resumed.ids, whole.ids);
}

// Sessions off: session requests get FAILED_PRECONDITION.
TEST_F(SessionTest, SessionsOff) {
  ServerOptions options = Options();
  options.sessions.kinds.clear();
  std::unique_ptr<Server> server = Start(options);
  ASSERT_NE(server, nullptr);
  Client client(server->port());
  v1::GenerateRequest request = Request({1, 2}, 2, false);
  request.set_save_session_as("x");
  const Client::Stream stream = client.Generate(request);
  EXPECT_EQ(stream.status.error_code(), grpc::StatusCode::FAILED_PRECONDITION);
  EXPECT_THAT(stream.status.error_message(), HasSubstr("--session-store"));
}

}  // namespace
}  // namespace hgrn2::server
