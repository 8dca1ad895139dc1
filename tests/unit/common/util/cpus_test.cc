// CPU and memory limits (common/util/cpus.h): read from a cgroup file system
// laid out under a temporary root as v2, hybrid and v1 hosts lay it out, and
// the affinity mask of a process started under a narrower one.
#include "common/util/cpus.h"

#include <sched.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include <catch2/catch.hpp>
#include <filesystem>
#include <fstream>

#include "../repo/repo_test_util.h"

using namespace cairn;
namespace fs = std::filesystem;

namespace {

// A cgroup file system's layout under a temporary root.
struct Root : cairn::repo::test::TempDir {
  void put(const std::string& rel, const std::string& text) const {
    fs::create_directories(fs::path(path + "/" + rel).parent_path());
    std::ofstream(path + "/" + rel) << text;
  }
};

}  // namespace

TEST_CASE("cpu.max text") {
  CHECK_FALSE(parse_cpu_max("max 100000\n"));
  CHECK(*parse_cpu_max("150000 100000\n") == Approx(1.5));
  CHECK(*parse_cpu_max("200000") == Approx(2.0));  // the period defaults to 100 ms
  CHECK_FALSE(parse_cpu_max("garbage"));
  CHECK_FALSE(parse_cpu_max("-1 100000"));
  CHECK_FALSE(parse_cpu_max(""));
}

TEST_CASE("cgroup v2: the lowest quota and memory limit on the path up to the root") {
  Root r;
  r.put("cgroup.controllers", "cpu memory\n");
  r.put("system.slice/cpu.max", "max 100000\n");
  r.put("system.slice/memory.max", "1073741824\n");
  r.put("system.slice/cairn-agent.service/cpu.max", "250000 100000\n");
  r.put("system.slice/cairn-agent.service/memory.max", "max\n");
  auto cg = "0::/system.slice/cairn-agent.service\n";
  CHECK(*cgroup_cpu_quota(cg, r.path) == Approx(2.5));
  CHECK(*cgroup_memory_limit(cg, r.path) == 1073741824u);
  // A parent's lower quota applies to its children.
  r.put("system.slice/cpu.max", "50000 100000\n");
  CHECK(*cgroup_cpu_quota(cg, r.path) == Approx(0.5));
  // No limits anywhere: none.
  CHECK_FALSE(cgroup_cpu_quota("0::/other\n", r.path));
}

TEST_CASE("cgroup v1 (and hybrid hosts): cfs quota and limit_in_bytes of the cpu and memory hierarchies") {
  Root r;
  r.put("unified/cgroup.controllers", "\n");
  r.put("cpu,cpuacct/agents/cpu.cfs_quota_us", "300000\n");
  r.put("cpu,cpuacct/agents/cpu.cfs_period_us", "100000\n");
  r.put("cpu,cpuacct/cpu.cfs_quota_us", "-1\n");
  r.put("cpu,cpuacct/cpu.cfs_period_us", "100000\n");
  r.put("memory/agents/memory.limit_in_bytes", "536870912\n");
  r.put("memory/memory.limit_in_bytes", "9223372036854771712\n");  // v1's "no limit"
  auto cg = "4:cpu,cpuacct:/agents\n3:memory:/agents\n0::/init.scope\n";
  CHECK(*cgroup_cpu_quota(cg, r.path) == Approx(3.0));
  CHECK(*cgroup_memory_limit(cg, r.path) == 536870912u);
  CHECK_FALSE(cgroup_memory_limit("3:memory:/\n", r.path));
}

TEST_CASE("a process started under a one-CPU affinity mask uses one CPU") {
  pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(0, &set);
    if (::sched_setaffinity(0, sizeof set, &set) != 0) ::_exit(2);
    // cpu_limit() is read once per process; this child has not read it yet.
    ::_exit(cpu_limit().affinity == 1 && usable_cpus() == 1 ? 0 : 1);
  }
  int status = 0;
  REQUIRE(::waitpid(pid, &status, 0) == pid);
  REQUIRE(WIFEXITED(status));
  CHECK(WEXITSTATUS(status) == 0);
  CHECK(usable_cpus() >= 1);
}
