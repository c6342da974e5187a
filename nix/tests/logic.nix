# Evaluates the module's logic and the module itself against the stand-in `lib`:
#   nix-instantiate --eval --strict nix/tests/logic.nix
# It is `true` when every check holds, and fails naming the first one that does not.
let
  lib = import ./stub-lib.nix;
  logic = import ../logic.nix { inherit lib; };

  defaults = {
    http.listen = "0.0.0.0:443";
    http.public_url = null;
    media.listen = "0.0.0.0:15000";
    metrics.listen = "127.0.0.1:9464";
  };
  cfgWith = settings: extra: {
    enable = true;
    openFirewall = true;
    manageFirewall = false;
    masterKeyFile = null;
    settings = lib.recursiveUpdate defaults settings;
  } // extra;

  good = cfgWith { http.public_url = "https://support.example.com"; sessions.max_duration_secs = 7200; } { };
  failed = cfg: map (a: a.message) (builtins.filter (a: !a.assertion) (logic.assertions cfg));

  # The module itself, with stand-ins for pkgs and the rest of the configuration.
  pkgs = {
    formats.toml = _: { generate = name: value: builtins.toFile name (builtins.toJSON value); };
    nftables = "/nix/store/0000000000000000000000000000000-nftables";
    coreutils = "/nix/store/0000000000000000000000000000000-coreutils";
  };
  evalModule = cfg: import ../module.nix {
    inherit lib pkgs;
    config.services.sightline = cfg // { package = { outPath = "/nix/store/x-sightline"; meta.mainProgram = "sightline"; }; };
  };
  module = evalModule (good // { manageFirewall = true; masterKeyFile = "/run/keys/sightline"; });
  service = module.config.content.systemd.services.sightline;
  unattended = (evalModule (good // {
    initialAdmin = { organisation = "Example \"Utilities\" 100%"; email = "ada@example.com"; name = "Ada Lovelace"; passwordFile = "/run/keys/ada"; };
  })).config.content.systemd.services.sightline;
  firewallUnit = module.config.content.systemd.services.sightline-firewall;

  checks = {
    "settings keep the admin's values" = (logic.effectiveSettings good).sessions.max_duration_secs == 7200;
    "unset values are left out of the TOML" = !((logic.effectiveSettings (cfgWith { } { })).http ? public_url);
    "the state directory is systemd's" = (logic.effectiveSettings (cfgWith { data_dir = "/srv/x"; } { })).data_dir == "/var/lib/sightline";
    "the firewall helper's socket is set when the appliance manages nftables" =
      (logic.effectiveSettings (good // { manageFirewall = true; })).firewall.helper_socket == "/run/sightline/firewall.sock";
    "ports come from the listen addresses" = logic.ports (logic.effectiveSettings good) == { https = 443; media = 15000; };
    "IPv6 listen addresses work" = logic.portOf "[::]:8443" == 8443;
    "a good configuration passes every assertion" = failed good == [ ];
    "a listen address without a port is refused" =
      builtins.length (failed (cfgWith { http.listen = "support.example.com"; } { })) == 1;
    "a secret in settings is refused" =
      failed (cfgWith { backup.identity = "AGE-SECRET-KEY-1..."; } { })
      == [ "services.sightline.settings must not hold secrets (backup.identity): the Nix store is world-readable. Give the master key as services.sightline.masterKeyFile (a systemd credential)." ];
    "a master key in the store is refused" =
      builtins.length (failed (good // { masterKeyFile = "/nix/store/abc-key"; })) == 1;
    "the module opens the HTTPS and media ports" =
      module.config.content.networking.firewall.content == { allowedTCPPorts = [ 443 ]; allowedUDPPorts = [ 15000 ]; };
    "the master key arrives as a credential" =
      service.serviceConfig.LoadCredential == [ "sightline-master-key:/run/keys/sightline" ];
    "the service is hardened like the shipped unit" =
      service.serviceConfig.ProtectSystem == "strict" && service.serviceConfig.NoNewPrivileges
      && service.serviceConfig.CapabilityBoundingSet == [ "CAP_NET_BIND_SERVICE" ];
    "the firewall unit exists only when asked for" =
      firewallUnit.condition && !(evalModule good).config.content.systemd.services.sightline-firewall.condition;
    "without initialAdmin nothing runs before the service" = service.serviceConfig.ExecStartPre == [ ];
    "initialAdmin runs sightline init before the start, its password a credential" =
      builtins.match "/nix/store/x-sightline/bin/sightline --config .*sightline.toml init --organisation \"Example \\\\\"Utilities\\\\\" 100%%\" --admin-email \"ada@example.com\" --admin-name \"Ada Lovelace\" --admin-password-file %d/sightline-admin-password"
        (builtins.head unattended.serviceConfig.ExecStartPre) != null
      && unattended.serviceConfig.LoadCredential == [ "sightline-admin-password:/run/keys/ada" ];
    "an admin password in the store is refused" =
      builtins.length (failed (good // { initialAdmin = { organisation = "O"; email = "a@b.c"; name = "A"; passwordFile = "/nix/store/abc-pw"; }; })) == 1;
    "systemctl reload sends SIGHUP" = service.serviceConfig.ExecReload == "/nix/store/0000000000000000000000000000000-coreutils/bin/kill -HUP $MAINPID";
    "the service runs the package with the generated configuration" =
      builtins.match "/nix/store/x-sightline/bin/sightline --config .*sightline.toml serve" service.serviceConfig.ExecStart != null;
  };
  failing = builtins.filter (name: !checks.${name}) (builtins.attrNames checks);
in
if failing == [ ] then true else throw "failed: ${builtins.concatStringsSep "; " failing}"
