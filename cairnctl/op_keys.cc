// cairnctl keys init: the controller's signing key and CURVE keypair, and an
// operator keypair, created once; public keys printed, secrets never.
#include <cstdio>

#include "cairnctl/op_commands.h"
#include "controller/keyfiles.h"

namespace cairn::ctl {

void register_op_keys(CLI::App& app, Context& ctx) {
  auto* keys = app.add_subcommand("keys", "create the controller's and the operator's keys");
  keys->require_subcommand(1);
  auto* init = keys->add_subcommand("init", "create signing and CURVE keys in a directory (files 0600)");
  auto dir = std::make_shared<std::string>();
  init->add_option("--dir", *dir, "directory for the key files (created 0700)")->required();
  init->callback([&ctx, dir] {
    ctx.action = [dir]() -> int {
      auto k = controller::init_keys(*dir);
      std::printf("keys created in '%s'\n", dir->c_str());
      std::printf("controller signing key (agents trust it):  %s  (key id %s)\n", k.signing_public.c_str(),
                  k.signing_key_id.c_str());
      std::printf("controller CURVE public key (agents connect to it): %s\n", k.controller_curve.c_str());
      std::printf("operator CURVE public key (list it in operator.authorized_keys): %s\n", k.operator_curve.c_str());
      std::printf("secret keys: %s/%s, %s/%s, %s/%s (mode 0600; copy them nowhere)\n", dir->c_str(),
                  controller::kSigningKeyFile, dir->c_str(), controller::kCurveSecretFile, dir->c_str(),
                  controller::kOperatorSecretFile);
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
