# The Sightline binary, built from this source tree.
{
  lib,
  rustPlatform,
  cmake,
  perl,
}:

rustPlatform.buildRustPackage {
  pname = "sightline";
  version = "0.2.0";

  src = lib.cleanSourceWith {
    src = ../.;
    # Only what the build reads: no tests' node_modules, no target directories.
    filter =
      path: type:
      let
        base = baseNameOf path;
      in
      !(builtins.elem base [
        "target"
        "node_modules"
        ".git"
        "nix"
        "iso"
      ]);
  };
  cargoLock.lockFile = ../Cargo.lock;

  # aws-lc-sys (rustls's and str0m's crypto) builds C code.
  nativeBuildInputs = [
    cmake
    perl
  ];

  # The test suite drives real browsers and network namespaces; CI runs it.
  doCheck = false;

  meta = {
    description = "Self-hosted appliance for live camera remote support";
    homepage = "https://sightline.example.org/";
    license = lib.licenses.asl20;
    mainProgram = "sightline";
    platforms = lib.platforms.linux;
  };
}
