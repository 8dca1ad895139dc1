#!/usr/bin/env bash
# Formats cairn's C++ sources with clang-format (Debian's clang-format 14)
# and the repository's .clang-format. `--check` changes nothing: it lists
# every file that differs from its formatted form and fails (CI runs it in
# scripts/test.sh). Without it, files are rewritten in place.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "clang-format is not installed: bash scripts/install-deps.sh" >&2; exit 1; }
mapfile -t files < <(git ls-files '*.cc' '*.h' '*.cpp' | grep -v '^third_party/')
if [[ "${1:-}" == "--check" ]]; then
  bad=()
  for f in "${files[@]}"; do
    clang-format --dry-run -Werror "$f" >/dev/null 2>&1 || bad+=("$f")
  done
  if ((${#bad[@]})); then
    printf '%s\n' "${bad[@]}" >&2
    echo "${#bad[@]} of ${#files[@]} files are not formatted as .clang-format says: bash scripts/format.sh" >&2
    exit 1
  fi
  echo "all ${#files[@]} C++ files formatted as .clang-format says"
else
  clang-format -i "${files[@]}"
fi
