#pragma once
// One libpq connection (Debian's libpq5, PostgreSQL's own client library).
// Credentials come from a 0600 password file or a .pgpass (passfile), handed
// to libpq in memory: never in argv, the environment or a log line.
#include <memory>
#include <optional>
#include <string>
#include <vector>

typedef struct pg_conn PGconn;

namespace cairn::agent::postgresql {

struct ConnSettings {
  std::string host = "/var/run/postgresql";  // a socket directory or a host name
  int port = 5432;
  std::string user = "postgres";
  std::string dbname = "postgres";
  std::string sslmode;           // empty: libpq's default (prefer)
  std::string password_file;     // 0600; empty: none (peer, trust or passfile)
  std::string passfile;          // a .pgpass file (0600, as libpq requires)
  std::string describe() const;  // "postgres@/var/run/postgresql:5432/postgres", no secret
};

using Row = std::vector<std::optional<std::string>>;

class Conn {
 public:
  // Connects; throws cairn::Error(io) with libpq's message (which never holds the password).
  explicit Conn(const ConnSettings& s, const std::string& dbname_override = {});
  ~Conn();
  Conn(const Conn&) = delete;
  Conn& operator=(const Conn&) = delete;

  // Runs one statement with text parameters; the rows it returns (text
  // values, nullopt for NULL). Throws cairn::Error(io) naming the statement's
  // first words and the server's message.
  std::vector<Row> query(const std::string& sql, const std::vector<std::string>& params = {});
  // The first column of the first row; throws when there is none or it is NULL.
  std::string value(const std::string& sql, const std::vector<std::string>& params = {});
  int server_version() const;  // 150018
  bool ok() const;

 private:
  PGconn* c_ = nullptr;
  std::string where_;
};

}  // namespace cairn::agent::postgresql
