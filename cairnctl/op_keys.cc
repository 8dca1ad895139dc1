// cairnctl keys init: the controller's signing key and CURVE keypair, and an
// operator keypair, created once; public keys printed, secrets never.
#include <cstdio>
#include <ctime>

#include "cairnctl/op_client.h"
#include "cairnctl/op_commands.h"
#include "common/repo/snapshot.h"
#include "common/util/encoding.h"
#include "common/util/terminal_text.h"
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
      std::printf("keys created in '%s'\n", terminal_safe(*dir).c_str());
      std::printf("controller signing key (agents trust it):  %s  (key id %s)\n", k.signing_public.c_str(), k.signing_key_id.c_str());
      std::printf("controller CURVE public key (agents connect to it): %s\n", k.controller_curve.c_str());
      std::printf("operator CURVE public key (list it in operator.authorized_keys): %s\n", k.operator_curve.c_str());
      std::string d = terminal_safe(*dir);
      std::printf("secret keys: %s/%s, %s/%s, %s/%s (mode 0600; copy them nowhere)\n", d.c_str(), controller::kSigningKeyFile, d.c_str(),
                  controller::kCurveSecretFile, d.c_str(), controller::kOperatorSecretFile);
      return kExitOk;
    };
  });

  auto* rotate =
      keys->add_subcommand("rotate", "replace the controller's plan-signing key; agents are told by an announcement signed by the old key");
  auto o = std::make_shared<OpOptions>();
  add_op_options(rotate, *o);
  auto validity = std::make_shared<std::string>("365d");
  rotate->add_option("--announcement-validity", *validity,
                     "how long an agent that is offline now can still be brought over (default 365d)");
  rotate->callback([&ctx, o, validity] {
    ctx.action = [o, validity]() -> int {
      int64_t secs = parse_duration(*validity);
      if (secs < 3600) {
        std::fprintf(stderr, "cairnctl: --announcement-validity '%s' must be a duration of at least 1h (e.g. 30d)\n", validity->c_str());
        return kExitError;
      }
      cairn::v1::OperatorRequest q;
      q.mutable_key_rotate()->set_announcement_validity_seconds(secs);
      auto r = op_call(*o, q);
      const auto& k = r.key_rotation();
      if (o->json) {
        std::printf("%s\n", proto_json(k).c_str());
        return kExitOk;
      }
      // The controller's answer is shown escaped like every other text from the wire.
      std::printf("signing key rotated: %s -> %s\n", terminal_safe(k.old_key_id()).c_str(), terminal_safe(k.new_key_id()).c_str());
      std::printf("new public key: %s\n", terminal_safe(k.new_public_key()).c_str());
      std::printf(
          "announcement %s sent to %u connected agent(s); the other %u approved agent(s) receive it when they "
          "connect, until %s\n",
          terminal_safe(k.announcement_id()).c_str(), k.agents_notified(),
          k.agents_approved() > k.agents_notified() ? k.agents_approved() - k.agents_notified() : 0,
          repo::format_rfc3339(k.announcement_expires_at()).c_str());
      if (k.plans_resigned()) std::printf("%u unanswered plan(s) re-signed with the new key\n", k.plans_resigned());
      if (!k.incomplete().empty())
        std::fprintf(stderr,
                     "cairnctl: warning: the new key signs already, but installing it failed (%s); restart "
                     "cairn-controller to complete the rotation\n",
                     terminal_safe(k.incomplete()).c_str());
      std::printf(
          "'cairnctl agent list' shows which agents trust the new key; agents enrolled from now on need the "
          "new public key in their signing_keys_file\n");
      return kExitOk;
    };
  });
}

}  // namespace cairn::ctl
