// ServingTls: the gRPC port's TLS (and mutual TLS) credentials, and their reload on SIGHUP; the
// OpenSSL checks a certificate, key and CA bundle pass before they are served.
#pragma once

#include <openssl/ssl.h>

#include <memory>
#include <mutex>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "grpcpp/security/server_credentials.h"
#include "server/options.h"

namespace hgrn2::server {

// A PEM certificate chain and private key: the chain parses (one certificate or more), the key
// parses and belongs to the first certificate, and that certificate is valid now. Returns a line
// describing the certificate (subject and expiry) for the log; InvalidArgument saying what is
// wrong otherwise. Never puts key material in a message.
absl::StatusOr<std::string> CheckIdentity(absl::string_view certificate_chain_pem,
                                          absl::string_view private_key_pem);
// A PEM bundle of CA certificates: at least one, every block a certificate. Returns how many.
absl::StatusOr<int> CheckCaBundle(absl::string_view pem);

// How the files reach gRPC (1.51 has no provider whose certificates can be replaced in memory):
// the validated PEMs are copied into a private folder (0700, removed at exit) and served by
// grpc::experimental::FileWatcherCertificateProvider, which re-reads them every
// kRefreshSeconds. The key and the chain are one file there, so a reload replaces both with one
// rename(2) and the watcher can never pair a new key with an old certificate. Reload validates the
// configured files first; when they are bad, the copies (and so what is served) stay as they were.
//
// Thread-safety: credentials() and Reload() may be called from any thread.
class ServingTls {
 public:
  // How often the watcher re-reads the private copies: a reload is served within this long.
  static constexpr unsigned int kRefreshSeconds = 1;

  // Validates the files named in `options` (cert_file and key_file set) and installs them.
  // InvalidArgument naming the flag and the problem; Internal when the private folder cannot be
  // written.
  static absl::StatusOr<std::unique_ptr<ServingTls>> Create(const TlsOptions& options);
  ~ServingTls();
  ServingTls(const ServingTls&) = delete;
  ServingTls& operator=(const ServingTls&) = delete;

  // For ServerBuilder::AddListeningPort. Client certificates are required and verified against
  // the client CA when one is configured, not requested otherwise.
  std::shared_ptr<grpc::ServerCredentials> credentials() const { return credentials_; }

  // Reads the configured files again; when they pass the checks, they replace what is served
  // (within kRefreshSeconds). Returns a line for the log describing what is now installed, or the
  // reason nothing changed.
  absl::StatusOr<std::string> Reload();

  // For an HTTPS endpoint beside the gRPC port (/metrics with --metrics-tls): sets `ctx` up so that
  // every handshake presents the identity in force (a reload reaches the next connection) and,
  // with a client CA, requires a client certificate signed by the CAs in force. False when
  // OpenSSL refuses. This object must outlive `ctx`.
  bool ConfigureHttps(SSL_CTX& ctx);

 private:
  explicit ServingTls(const TlsOptions& options) : options_(options) {}
  // Reads, checks and copies the files into folder_; the log line.
  absl::StatusOr<std::string> Install();

  const TlsOptions options_;
  std::string folder_;  // the private copies
  std::mutex mutex_;    // one Install at a time
  std::shared_ptr<grpc::ServerCredentials> credentials_;
  // The validated PEMs in force, for ConfigureHttps's handshakes.
  std::mutex pem_mutex_;
  std::string identity_pem_;   // the chain, then the key
  std::string client_ca_pem_;  // empty: no client certificates asked for
  // Called by OpenSSL in each handshake (SSL_CTX_set_cert_cb).
  static int SelectCertificate(SSL* ssl, void* self);
};

}  // namespace hgrn2::server
