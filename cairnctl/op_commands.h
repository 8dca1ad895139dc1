#pragma once
// cairnctl's operator commands: they talk to a running controller over its
// CURVE-secured operator socket (docs/protocol.md § Operator API), unlike
// `cairnctl repo ...`, which works on a repository directly.
#include <CLI/CLI.hpp>

#include "cairnctl/cli.h"
#include "controller/catalog_rebuild.h"

namespace cairn::ctl {

void register_op_keys(CLI::App& app, Context& ctx);     // keys init
void register_op_agent(CLI::App& app, Context& ctx);    // agent list|approve|revoke
void register_op_backup(CLI::App& app, Context& ctx);   // backup create|list|show
void register_op_restore(CLI::App& app, Context& ctx);  // restore SET, restore show ID
void register_op_drill(CLI::App& app, Context& ctx);    // drill run|list|show
void register_op_status(CLI::App& app, Context& ctx);   // status
void register_op_policy(CLI::App& app, Context& ctx);   // policy ..., forget
void register_op_catalog(CLI::App& app, Context& ctx);  // catalog rebuild
void register_op_export(CLI::App& app, Context& ctx);   // export, import

// The repositories named by --config's [[repository]] tables and by --repo
// (with --password-file, called `name`). Throws cairn::Error when none is.
std::vector<controller::RebuildSource> repository_sources(const std::string& config, const std::string& repo,
                                                          const std::string& password_file, const std::string& name);

// --trusted-key values ('ed25519:<base64>' or a file holding such keys), and
// with --config its key_dir's controller-signing.pub (a note when it is not
// there). Throws cairn::Error naming a value that is no key.
std::vector<plan::PublicKey> trusted_keys(const std::vector<std::string>& given, const std::string& config);
inline constexpr const char* kTrustedKeyHelp =
    "a controller signing key whose set records to believe: 'ed25519:<base64>' or a file holding one "
    "(controller-signing.pub; repeatable, e.g. keys rotated away)";

}  // namespace cairn::ctl
