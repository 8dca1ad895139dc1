// cairn-record-forge: a test tool, never installed. It plays someone who
// holds a repository's password (any agent sharing the repository) and writes
// a set record the controller never signed: its body lists the snapshot given,
// signed by a key made here, claiming the key id given (the controller's, to
// pass for its record). `cairnctl repo check --trusted-key` must name it as
// not verifying (tests/integration/test_store_verify.py).
//
//   cairn-record-forge --repo URL --password-file FILE [--credentials FILE] --set ID --task ID
//                      --snapshot ID --repository NAME [--key-id ID]
// Prints the record's object name.
#include <cstdio>
#include <cstring>
#include <map>
#include <string>

#include "common/repo/repository.h"
#include "controller/maintenance.h"
#include "controller/set_record.h"

using namespace cairn;

int main(int argc, char** argv) {
  std::map<std::string, std::string> a;
  for (int i = 1; i + 1 < argc; i += 2) a[argv[i]] = argv[i + 1];
  for (const char* k : {"--repo", "--password-file", "--set", "--task", "--snapshot", "--repository"})
    if (!a.count(k)) {
      std::fprintf(stderr, "cairn-record-forge: %s is required\n", k);
      return 2;
    }
  try {
    auto r = controller::open_controller_repository({a["--repository"], a["--repo"], a["--password-file"], a["--credentials"]});
    controller::SetRecord rec;
    rec.set_id = a["--set"];
    rec.created_at = rec.finished_at = rec.signed_at = 1'790'000'000;
    rec.state = "complete";
    rec.trigger = "manual";
    controller::SetRecord::Task t;
    t.id = a["--task"];
    t.agent_name = "forger";
    t.agent_key = std::string(64, 'a');
    t.component = "data";
    t.repository = a["--repository"];
    t.snapshot_id = a["--snapshot"];
    t.state = "succeeded";
    rec.tasks.push_back(t);
    auto file = controller::sign_set_record(rec, plan::SigningKey::generate());
    if (a.count("--key-id")) file["key_id"] = a["--key-id"];
    std::printf("%s\n", r->save_json(repo::FileType::set_record, file).c_str());
  } catch (const std::exception& e) {
    std::fprintf(stderr, "cairn-record-forge: %s\n", e.what());
    return 1;
  }
  return 0;
}
