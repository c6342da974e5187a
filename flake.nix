{
  description = "Sightline: self-hosted live camera remote support";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-25.05";

  outputs =
    { self, nixpkgs }:
    let
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAll = f: nixpkgs.lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});
    in
    {
      packages = forAll (pkgs: {
        default = pkgs.callPackage ./nix/package.nix { };
      });

      overlays.default = final: _prev: {
        sightline = final.callPackage ./nix/package.nix { };
      };

      # The module, with this flake's package as `services.sightline.package`'s default.
      nixosModules.default = {
        imports = [ ./nix/module.nix ];
        nixpkgs.overlays = [ self.overlays.default ];
      };

      checks = forAll (pkgs: {
        vm = pkgs.testers.runNixOSTest (import ./nix/tests/vm.nix { module = self.nixosModules.default; });
        logic = pkgs.runCommand "sightline-module-logic" { nativeBuildInputs = [ pkgs.nix ]; } ''
          export NIX_STATE_DIR=$TMPDIR/nix
          nix-instantiate --eval --strict ${./nix/tests/logic.nix} > $out
        '';
      });
    };
}
