# The module's own logic, kept apart from the option declarations so that it can be
# evaluated here without nixpkgs (see tests/logic.nix and its stand-in `lib`).
{ lib }:

let
  # "0.0.0.0:443", "[::]:443" → 443; anything else → null.
  portOf =
    listen:
    let
      m = if builtins.isString listen then builtins.match "(.+):([0-9]{1,5})" listen else null;
    in
    if m == null then null else lib.toInt (builtins.elemAt m 1);

  # Keys that name secrets; none may be in `settings`, which ends up in the Nix store.
  secretNames = [
    "master_key"
    "password"
    "secret"
    "private_key"
    "identity"
    "token"
  ];

  secretsIn =
    prefix: attrs:
    lib.concatLists (
      lib.mapAttrsToList (
        name: value:
        let
          path = prefix ++ [ name ];
        in
        if builtins.isAttrs value then
          secretsIn path value
        else
          lib.optional (builtins.elem name secretNames) (lib.concatStringsSep "." path)
      ) attrs
    );
in
rec {
  inherit portOf;

  # What the appliance is given: the admin's settings without unset (null) values, with
  # the state directory systemd manages and, when the appliance runs the firewall, the
  # helper's socket.
  effectiveSettings =
    cfg:
    lib.recursiveUpdate (lib.filterAttrsRecursive (_: v: v != null) cfg.settings) (
      {
        data_dir = "/var/lib/sightline";
      }
      // lib.optionalAttrs cfg.manageFirewall {
        firewall.helper_socket = "/run/sightline/firewall.sock";
      }
    );

  ports = settings: {
    https = portOf settings.http.listen;
    media = portOf settings.media.listen;
  };

  # One argument of a systemd command line: quoted, with its escapes, specifiers (%) and
  # variables ($) kept literal.
  systemdArg = s: "\"" + builtins.replaceStrings [ "\\" "\"" "%" "$" ] [ "\\\\" "\\\"" "%%" "$$" ] s + "\"";

  # `sightline init` for `initialAdmin`, run before the service starts (a no-op once an
  # account exists); the password arrives as a credential (%d: their directory).
  initCommand =
    cfg: sightline:
    let
      admin = cfg.initialAdmin;
    in
    "${sightline} init --organisation ${systemdArg admin.organisation} --admin-email ${systemdArg admin.email} --admin-name ${systemdArg admin.name}"
    + (if admin.passwordFile or null != null then " --admin-password-file %d/sightline-admin-password" else "");

  credentials =
    cfg:
    let
      admin = cfg.initialAdmin or null;
    in
    lib.optional (cfg.masterKeyFile != null) "sightline-master-key:${cfg.masterKeyFile}"
    ++ lib.optional (admin != null && admin.passwordFile or null != null) "sightline-admin-password:${admin.passwordFile}";

  assertions =
    cfg:
    let
      found = secretsIn [ ] cfg.settings;
    in
    [
      {
        assertion = portOf cfg.settings.http.listen != null;
        message = "services.sightline.settings.http.listen must be address:port, not \"${toString cfg.settings.http.listen}\"";
      }
      {
        assertion = portOf cfg.settings.media.listen != null;
        message = "services.sightline.settings.media.listen must be address:port, not \"${toString cfg.settings.media.listen}\"";
      }
      {
        assertion = found == [ ];
        message = "services.sightline.settings must not hold secrets (${lib.concatStringsSep ", " found}): the Nix store is world-readable. Give the master key as services.sightline.masterKeyFile (a systemd credential).";
      }
      {
        assertion = cfg.masterKeyFile == null || !(lib.hasPrefix builtins.storeDir cfg.masterKeyFile);
        message = "services.sightline.masterKeyFile must be outside the Nix store";
      }
      {
        assertion =
          (cfg.initialAdmin or null) == null
          || (cfg.initialAdmin.passwordFile or null) == null
          || !(lib.hasPrefix builtins.storeDir cfg.initialAdmin.passwordFile);
        message = "services.sightline.initialAdmin.passwordFile must be outside the Nix store";
      }
    ];
}
