#include "agent/drivers/postgresql/conn.h"

#include <libpq-fe.h>

#include "agent/config.h"
#include "common/util/error.h"
#include "common/util/fs.h"

namespace cairn::agent::postgresql {

namespace {

// libpq's messages end with a newline and may span lines.
std::string one_line(const char* m) {
  std::string s = m ? m : "";
  while (!s.empty() && (s.back() == '\n' || s.back() == ' ')) s.pop_back();
  for (auto& ch : s)
    if (ch == '\n') ch = ' ';
  return s;
}

std::string first_words(const std::string& sql) {
  std::string s = sql.substr(0, 60);
  for (auto& ch : s)
    if (ch == '\n') ch = ' ';
  return s + (sql.size() > 60 ? "..." : "");
}

}  // namespace

std::string ConnSettings::describe() const { return user + "@" + host + ":" + std::to_string(port) + "/" + dbname; }

Conn::Conn(const ConnSettings& s, const std::string& dbname_override) {
  std::string db = dbname_override.empty() ? s.dbname : dbname_override;
  where_ = s.user + "@" + s.host + ":" + std::to_string(s.port) + "/" + db;
  std::string password;
  if (!s.password_file.empty()) {
    if (std::string why = check_secret_file_mode(s.password_file); !why.empty())
      throw Error(Errc::invalid_input, "password_file '" + s.password_file + "': " + why);
    password = read_secret_file(s.password_file);
  }
  std::string port = std::to_string(s.port);
  std::vector<const char*> keys = {"host", "port", "user", "dbname", "application_name", "connect_timeout"};
  std::vector<const char*> vals = {s.host.c_str(), port.c_str(), s.user.c_str(), db.c_str(), "cairn-agent", "10"};
  if (!s.sslmode.empty()) keys.push_back("sslmode"), vals.push_back(s.sslmode.c_str());
  if (!password.empty()) keys.push_back("password"), vals.push_back(password.c_str());
  if (!s.passfile.empty()) keys.push_back("passfile"), vals.push_back(s.passfile.c_str());
  keys.push_back(nullptr);
  vals.push_back(nullptr);
  c_ = PQconnectdbParams(keys.data(), vals.data(), 0);
  std::fill(password.begin(), password.end(), '\0');
  if (!c_) throw Error(Errc::io, "postgresql at " + where_ + ": out of memory connecting");
  if (PQstatus(c_) != CONNECTION_OK) {
    std::string m = one_line(PQerrorMessage(c_));
    PQfinish(c_);
    c_ = nullptr;
    throw Error(Errc::io, "cannot connect to postgresql at " + where_ + ": " + m);
  }
}

Conn::~Conn() {
  if (c_) PQfinish(c_);
}

bool Conn::ok() const { return c_ && PQstatus(c_) == CONNECTION_OK; }

int Conn::server_version() const { return c_ ? PQserverVersion(c_) : 0; }

std::vector<Row> Conn::query(const std::string& sql, const std::vector<std::string>& params) {
  std::vector<const char*> p;
  for (const auto& x : params) p.push_back(x.c_str());
  PGresult* r = PQexecParams(c_, sql.c_str(), int(p.size()), nullptr, p.empty() ? nullptr : p.data(), nullptr, nullptr, 0);
  struct Clear {
    PGresult* r;
    ~Clear() { PQclear(r); }
  } clear{r};
  auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
  if (st != PGRES_TUPLES_OK && st != PGRES_COMMAND_OK)
    throw Error(Errc::io, "postgresql at " + where_ + ": '" + first_words(sql) +
                              "' failed: " + one_line(r ? PQresultErrorMessage(r) : PQerrorMessage(c_)));
  std::vector<Row> rows;
  int n = PQntuples(r), f = PQnfields(r);
  for (int i = 0; i < n; ++i) {
    Row row;
    for (int j = 0; j < f; ++j) row.push_back(PQgetisnull(r, i, j) ? std::nullopt : std::optional<std::string>(PQgetvalue(r, i, j)));
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string Conn::value(const std::string& sql, const std::vector<std::string>& params) {
  auto rows = query(sql, params);
  if (rows.empty() || rows[0].empty() || !rows[0][0])
    throw Error(Errc::io, "postgresql at " + where_ + ": '" + first_words(sql) + "' returned no value");
  return *rows[0][0];
}

}  // namespace cairn::agent::postgresql
