# NixOS module for Sightline, in the shape of nixpkgs' service modules (livekit, garage):
# `services.sightline.settings` is freeform TOML with the important keys typed; secrets
# come through systemd credentials, never through the Nix store.
{
  config,
  lib,
  pkgs,
  ...
}:

let
  cfg = config.services.sightline;
  settingsFormat = pkgs.formats.toml { };
  logic = import ./logic.nix { inherit lib; };

  settings = logic.effectiveSettings cfg;
  configFile = settingsFormat.generate "sightline.toml" settings;
  ports = logic.ports settings;

  hardening = {
    # The same hardening as the shipped unit (systemd/sightline.service).
    NoNewPrivileges = true;
    ProtectSystem = "strict";
    ProtectHome = true;
    PrivateTmp = true;
    PrivateDevices = true;
    DevicePolicy = "closed";
    PrivateMounts = true;
    ProtectKernelTunables = true;
    ProtectKernelModules = true;
    ProtectKernelLogs = true;
    ProtectControlGroups = true;
    ProtectClock = true;
    ProtectHostname = true;
    ProtectProc = "invisible";
    ProcSubset = "pid";
    RestrictAddressFamilies = [
      "AF_INET"
      "AF_INET6"
      "AF_UNIX"
    ];
    RestrictNamespaces = true;
    RestrictRealtime = true;
    RestrictSUIDSGID = true;
    LockPersonality = true;
    MemoryDenyWriteExecute = true;
    RemoveIPC = true;
    SystemCallArchitectures = "native";
    SystemCallFilter = [
      "@system-service"
      "~@privileged @resources"
    ];
    UMask = "0077";
  };
in
{
  options.services.sightline = {
    enable = lib.mkEnableOption "Sightline, the self-hosted live camera remote support appliance";

    package = lib.mkPackageOption pkgs "sightline" { };

    openFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = "Open the HTTPS port (TCP, also carrying media where UDP is blocked) and the media port (UDP) in the NixOS firewall.";
    };

    manageFirewall = lib.mkOption {
      type = lib.types.bool;
      default = false;
      description = ''
        Let the appliance manage its own nftables table (`sightline-firewall.service`:
        rate limits and the anomaly blocklist) instead of leaving the firewall to NixOS.
        Requires `networking.nftables.enable`.
      '';
    };

    masterKeyFile = lib.mkOption {
      type = lib.types.nullOr lib.types.str;
      default = null;
      example = "/run/keys/sightline-master.key";
      description = ''
        Path (outside the Nix store) to the age identity that wraps the store's keys,
        passed to the service as the systemd credential `sightline-master-key`. Without
        it the appliance creates one in its state directory on first start. A string,
        not a path, so that it is never copied into the world-readable store.
      '';
    };

    initialAdmin = lib.mkOption {
      default = null;
      description = ''
        The first account and its admin, made by `sightline init` before the first start
        (an unattended install needs no setup page). Nothing happens once an account
        exists. Without `passwordFile` the admin gets a random one-time password, printed
        to the journal, to be changed at first sign-in.
      '';
      type = lib.types.nullOr (lib.types.submodule {
        options = {
          organisation = lib.mkOption { type = lib.types.str; };
          email = lib.mkOption { type = lib.types.str; };
          name = lib.mkOption { type = lib.types.str; };
          passwordFile = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            description = "File (outside the Nix store) with the admin's password, passed as a systemd credential.";
          };
        };
      });
    };

    settings = lib.mkOption {
      default = { };
      description = "Sightline's configuration (`sightline.toml`); see the README's configuration section.";
      type = lib.types.submodule {
        freeformType = settingsFormat.type;
        options = {
          http.listen = lib.mkOption {
            type = lib.types.str;
            default = "0.0.0.0:443";
            description = "Address and port of the console, signaling and ICE-TCP.";
          };
          http.public_url = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = null;
            example = "https://support.example.com";
            description = "The URL customers open; used in invitation links.";
          };
          media.listen = lib.mkOption {
            type = lib.types.str;
            default = "0.0.0.0:15000";
            description = "Address and port of the WebRTC media relay (UDP).";
          };
          metrics.listen = lib.mkOption {
            type = lib.types.nullOr lib.types.str;
            default = "127.0.0.1:9464";
            description = "Prometheus metrics listener; null turns it off.";
          };
        };
      };
    };
  };

  config = lib.mkIf cfg.enable {
    assertions = logic.assertions cfg;

    networking.firewall = lib.mkIf cfg.openFirewall {
      allowedTCPPorts = [ ports.https ];
      allowedUDPPorts = [ ports.media ];
    };

    users.users.sightline = {
      isSystemUser = true;
      group = "sightline";
      description = "Sightline appliance";
    };
    users.groups.sightline = { };

    systemd.services.sightline = {
      description = "Sightline live camera remote support appliance";
      wantedBy = [ "multi-user.target" ];
      wants = [ "network-online.target" ] ++ lib.optional cfg.manageFirewall "sightline-firewall.service";
      after = [ "network-online.target" ] ++ lib.optional cfg.manageFirewall "sightline-firewall.service";
      serviceConfig = hardening // {
        Type = "notify";
        NotifyAccess = "main";
        ExecStartPre = lib.optional ((cfg.initialAdmin or null) != null) (logic.initCommand cfg "${lib.getExe cfg.package} --config ${configFile}");
        ExecStart = "${lib.getExe cfg.package} --config ${configFile} serve";
        # `systemctl reload sightline`: serve an imported certificate now.
        ExecReload = "${pkgs.coreutils}/bin/kill -HUP $MAINPID";
        WatchdogSec = "30s";
        Restart = "on-failure";
        RestartSec = "2s";
        User = "sightline";
        Group = "sightline";
        AmbientCapabilities = [ "CAP_NET_BIND_SERVICE" ];
        CapabilityBoundingSet = [ "CAP_NET_BIND_SERVICE" ];
        StateDirectory = "sightline";
        StateDirectoryMode = "0700";
        RuntimeDirectory = "sightline";
        LoadCredential = logic.credentials cfg;
      };
    };

    systemd.services.sightline-firewall = lib.mkIf cfg.manageFirewall {
      description = "Sightline host firewall (nftables) and anomaly blocklist";
      wantedBy = [ "multi-user.target" ];
      before = [ "sightline.service" ];
      path = [ pkgs.nftables ];
      serviceConfig = {
        ExecStart = "${lib.getExe cfg.package} --config ${configFile} firewall helper --socket /run/sightline/firewall.sock";
        Restart = "on-failure";
        RuntimeDirectory = "sightline";
        RuntimeDirectoryPreserve = true;
        AmbientCapabilities = [ "CAP_NET_ADMIN" ];
        CapabilityBoundingSet = [ "CAP_NET_ADMIN" ];
        NoNewPrivileges = true;
        ProtectSystem = "strict";
        ProtectHome = true;
        PrivateTmp = true;
      };
    };
  };
}
