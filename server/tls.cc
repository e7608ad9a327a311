// ServingTls: OpenSSL checks of certificates and keys, the private copies that gRPC's file
// watcher serves, and their replacement on reload.
#include "server/tls.h"

#include <fcntl.h>
#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>
#include <stdlib.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <system_error>

#include "absl/strings/str_cat.h"
#include "grpcpp/security/tls_certificate_provider.h"
#include "grpcpp/security/tls_credentials_options.h"

namespace hgrn2::server {
namespace {

constexpr const char* kIdentityFile = "identity.pem";  // the chain, then the key
constexpr const char* kClientCaFile = "client-ca.pem";

struct BioFree {
  void operator()(BIO* bio) const { BIO_free(bio); }
};
struct X509Free {
  void operator()(X509* x509) const { X509_free(x509); }
};
struct KeyFree {
  void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); }
};
using BioPtr = std::unique_ptr<BIO, BioFree>;
using X509Ptr = std::unique_ptr<X509, X509Free>;
using KeyPtr = std::unique_ptr<EVP_PKEY, KeyFree>;

BioPtr MemoryBio(absl::string_view pem) {
  return BioPtr(BIO_new_mem_buf(pem.data(), static_cast<int>(pem.size())));
}

// OpenSSL's reason for the last failure (the queue is emptied), e.g. "no start line".
std::string OpenSslReason() {
  const unsigned long error = ERR_peek_last_error();
  ERR_clear_error();
  if (error == 0) return "unknown error";
  const char* reason = ERR_reason_error_string(error);
  return reason != nullptr ? reason : absl::StrCat("error ", error);
}

// Every certificate in a PEM text, in order (other kinds of block, such as a key, are skipped).
absl::StatusOr<std::vector<X509Ptr>> ReadCertificates(absl::string_view pem) {
  ERR_clear_error();
  BioPtr bio = MemoryBio(pem);
  std::vector<X509Ptr> certificates;
  while (true) {
    X509Ptr certificate(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
    if (certificate == nullptr) break;
    certificates.push_back(std::move(certificate));
  }
  const unsigned long error = ERR_peek_last_error();
  // The loop ends on "no start line" after the last block; anything else is a bad block.
  if (error != 0 && !(ERR_GET_LIB(error) == ERR_LIB_PEM &&
                      ERR_GET_REASON(error) == PEM_R_NO_START_LINE && !certificates.empty())) {
    return absl::InvalidArgumentError(
        certificates.empty()
            ? absl::StrCat("no PEM certificate (", OpenSslReason(), ")")
            : absl::StrCat("certificate ", certificates.size() + 1, ": ", OpenSslReason()));
  }
  ERR_clear_error();
  return certificates;
}

std::string NameOf(X509_NAME* name) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  X509_NAME_print_ex(bio.get(), name, 0, XN_FLAG_ONELINE & ~ASN1_STRFLGS_ESC_MSB);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

std::string TimeOf(const ASN1_TIME* time) {
  BioPtr bio(BIO_new(BIO_s_mem()));
  ASN1_TIME_print(bio.get(), time);
  char* data = nullptr;
  const long size = BIO_get_mem_data(bio.get(), &data);
  return std::string(data, static_cast<size_t>(size));
}

absl::StatusOr<std::string> ReadFile(const std::string& path, absl::string_view flag) {
  std::ifstream in(path, std::ios::binary);
  if (!in) {
    return absl::InvalidArgumentError(
        absl::StrCat(flag, " ", path, ": cannot read it (", std::strerror(errno), ")"));
  }
  std::ostringstream text;
  text << in.rdbuf();
  return text.str();
}

absl::Status WithFlag(const absl::Status& status, absl::string_view flag, const std::string& path) {
  return absl::Status(status.code(), absl::StrCat(flag, " ", path, ": ", status.message()));
}

// Writes `text` to folder/name through a fresh file and rename(2): a reader sees the old file or
// the new one, never a part.
absl::Status ReplaceFile(const std::string& folder, const std::string& name,
                         absl::string_view text) {
  const std::string target = absl::StrCat(folder, "/", name);
  const std::string temporary = absl::StrCat(target, ".new");
  const int fd = open(temporary.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  if (fd < 0) {
    return absl::InternalError(absl::StrCat("cannot write ", temporary, ": ", strerror(errno)));
  }
  size_t written = 0;
  while (written < text.size()) {
    const ssize_t n = write(fd, text.data() + written, text.size() - written);
    if (n <= 0) break;
    written += static_cast<size_t>(n);
  }
  close(fd);
  if (written != text.size() || rename(temporary.c_str(), target.c_str()) != 0) {
    unlink(temporary.c_str());
    return absl::InternalError(absl::StrCat("cannot write ", target, ": ", strerror(errno)));
  }
  return absl::OkStatus();
}

}  // namespace

absl::StatusOr<std::string> CheckIdentity(absl::string_view certificate_chain_pem,
                                          absl::string_view private_key_pem) {
  absl::StatusOr<std::vector<X509Ptr>> chain = ReadCertificates(certificate_chain_pem);
  if (!chain.ok()) return chain.status();
  ERR_clear_error();
  BioPtr key_bio = MemoryBio(private_key_pem);
  // No passphrase: OpenSSL's default would ask for one on the terminal, and gRPC cannot use an
  // encrypted key either.
  pem_password_cb* no_passphrase = [](char*, int, int, void*) { return 0; };
  KeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, no_passphrase, nullptr));
  if (key == nullptr) {
    // OpenSSL's reason only: nothing of the key's text goes into a message.
    return absl::InvalidArgumentError(absl::StrCat("no usable PEM private key (", OpenSslReason(),
                                                   "; an encrypted key is not supported)"));
  }
  X509* leaf = (*chain)[0].get();
  if (X509_check_private_key(leaf, key.get()) != 1) {
    ERR_clear_error();
    return absl::InvalidArgumentError(
        absl::StrCat("the private key does not belong to the certificate ",
                     NameOf(X509_get_subject_name(leaf))));
  }
  if (X509_cmp_current_time(X509_get0_notAfter(leaf)) <= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the certificate ", NameOf(X509_get_subject_name(leaf)), " expired on ",
                     TimeOf(X509_get0_notAfter(leaf))));
  }
  if (X509_cmp_current_time(X509_get0_notBefore(leaf)) >= 0) {
    return absl::InvalidArgumentError(
        absl::StrCat("the certificate ", NameOf(X509_get_subject_name(leaf)),
                     " is not valid before ", TimeOf(X509_get0_notBefore(leaf))));
  }
  return absl::StrCat("certificate ", NameOf(X509_get_subject_name(leaf)), " issued by ",
                      NameOf(X509_get_issuer_name(leaf)), ", valid until ",
                      TimeOf(X509_get0_notAfter(leaf)));
}

absl::StatusOr<int> CheckCaBundle(absl::string_view pem) {
  absl::StatusOr<std::vector<X509Ptr>> certificates = ReadCertificates(pem);
  if (!certificates.ok()) return certificates.status();
  return static_cast<int>(certificates->size());
}

absl::StatusOr<std::unique_ptr<ServingTls>> ServingTls::Create(const TlsOptions& options) {
  if (options.cert_file.empty() || options.key_file.empty()) {
    return absl::InvalidArgumentError("--tls-cert and --tls-key: both are needed for TLS");
  }
  std::unique_ptr<ServingTls> tls(new ServingTls(options));
  std::string pattern =
      (std::filesystem::temp_directory_path() / "hgrn2-server-tls-XXXXXX").string();
  if (mkdtemp(pattern.data()) == nullptr) {  // mode 0700
    return absl::InternalError(
        absl::StrCat("TLS: cannot make a private folder ", pattern, ": ", strerror(errno)));
  }
  tls->folder_ = pattern;
  absl::StatusOr<std::string> installed = tls->Install();
  if (!installed.ok()) return installed.status();

  const std::string identity = absl::StrCat(tls->folder_, "/", kIdentityFile);
  const bool mutual = !options.client_ca_file.empty();
  auto provider = std::make_shared<grpc::experimental::FileWatcherCertificateProvider>(
      identity, identity, mutual ? absl::StrCat(tls->folder_, "/", kClientCaFile) : "",
      kRefreshSeconds);
  grpc::experimental::TlsServerCredentialsOptions tls_options(provider);
  tls_options.watch_identity_key_cert_pairs();
  if (mutual) {
    tls_options.watch_root_certs();
    tls_options.set_cert_request_type(GRPC_SSL_REQUEST_AND_REQUIRE_CLIENT_CERTIFICATE_AND_VERIFY);
  } else {
    tls_options.set_cert_request_type(GRPC_SSL_DONT_REQUEST_CLIENT_CERTIFICATE);
  }
  tls->credentials_ = grpc::experimental::TlsServerCredentials(tls_options);
  if (tls->credentials_ == nullptr) return absl::InternalError("TLS: gRPC made no credentials");
  return tls;
}

ServingTls::~ServingTls() {
  if (folder_.empty()) return;
  std::error_code ignored;
  std::filesystem::remove_all(folder_, ignored);
}

absl::StatusOr<std::string> ServingTls::Reload() { return Install(); }

absl::StatusOr<std::string> ServingTls::Install() {
  std::lock_guard<std::mutex> lock(mutex_);
  absl::StatusOr<std::string> chain = ReadFile(options_.cert_file, "--tls-cert");
  if (!chain.ok()) return chain.status();
  absl::StatusOr<std::string> key = ReadFile(options_.key_file, "--tls-key");
  if (!key.ok()) return key.status();
  absl::StatusOr<std::string> identity = CheckIdentity(*chain, *key);
  if (!identity.ok()) {
    return absl::InvalidArgumentError(absl::StrCat("--tls-cert ", options_.cert_file,
                                                   " with --tls-key ", options_.key_file, ": ",
                                                   identity.status().message()));
  }
  std::string client_cas;
  std::string line = *identity;
  if (!options_.client_ca_file.empty()) {
    absl::StatusOr<std::string> bundle = ReadFile(options_.client_ca_file, "--tls-client-ca");
    if (!bundle.ok()) return bundle.status();
    absl::StatusOr<int> count = CheckCaBundle(*bundle);
    if (!count.ok()) return WithFlag(count.status(), "--tls-client-ca", options_.client_ca_file);
    client_cas = *std::move(bundle);
    absl::StrAppend(&line, "; client certificates required, ", *count, " CA certificate(s) from ",
                    options_.client_ca_file);
  }
  // Each file is whole and consistent on its own: the identity (chain and key) in one rename.
  std::string combined = *chain;
  if (!combined.empty() && combined.back() != '\n') combined += '\n';
  combined += *key;
  if (absl::Status written = ReplaceFile(folder_, kIdentityFile, combined); !written.ok()) {
    return written;
  }
  if (!client_cas.empty()) {
    if (absl::Status written = ReplaceFile(folder_, kClientCaFile, client_cas); !written.ok()) {
      return written;
    }
  }
  {
    std::lock_guard<std::mutex> pem_lock(pem_mutex_);
    identity_pem_ = std::move(combined);
    client_ca_pem_ = std::move(client_cas);
  }
  return line;
}

bool ServingTls::ConfigureHttps(SSL_CTX& ctx) {
  SSL_CTX_set_min_proto_version(&ctx, TLS1_2_VERSION);
  SSL_CTX_set_cert_cb(&ctx, &ServingTls::SelectCertificate, this);
  return true;
}

int ServingTls::SelectCertificate(SSL* ssl, void* self) {
  std::string identity;
  std::string client_cas;
  {
    ServingTls& tls = *static_cast<ServingTls*>(self);
    std::lock_guard<std::mutex> lock(tls.pem_mutex_);
    identity = tls.identity_pem_;
    client_cas = tls.client_ca_pem_;
  }
  // Both were checked by Install (CheckIdentity, CheckCaBundle) before they were put in force.
  absl::StatusOr<std::vector<X509Ptr>> chain = ReadCertificates(identity);
  if (!chain.ok() || chain->empty()) return 0;
  BioPtr key_bio = MemoryBio(identity);
  KeyPtr key(PEM_read_bio_PrivateKey(key_bio.get(), nullptr, nullptr, nullptr));
  if (key == nullptr || SSL_use_certificate(ssl, (*chain)[0].get()) != 1 ||
      SSL_use_PrivateKey(ssl, key.get()) != 1 || SSL_clear_chain_certs(ssl) != 1) {
    return 0;
  }
  for (size_t i = 1; i < chain->size(); ++i) {
    if (SSL_add1_chain_cert(ssl, (*chain)[i].get()) != 1) return 0;
  }
  if (!client_cas.empty()) {
    absl::StatusOr<std::vector<X509Ptr>> cas = ReadCertificates(client_cas);
    if (!cas.ok()) return 0;
    X509_STORE* store = X509_STORE_new();
    if (store == nullptr) return 0;
    for (const X509Ptr& ca : *cas) X509_STORE_add_cert(store, ca.get());
    SSL_set0_verify_cert_store(ssl, store);  // the SSL owns it from here
    SSL_set_verify(ssl, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, nullptr);
  }
  return 1;
}

}  // namespace hgrn2::server
