# The flake's nixosModules.default with a stand-in `self`, for the harness.
# It checks that the flake imports nix/module.nix and defaults
# services.grit.package to the flake's own package. (The real `self` needs
# nixpkgs.legacyPackages, which cannot be fetched offline.) Needs
# $NIXPKGS_LIB, as the harness does.
let
  lib = import (builtins.getEnv "NIXPKGS_LIB");
  flake = import ../../flake.nix;
  fakeGrit = {
    type = "derivation";
    pname = "grit";
    version = "0.1.0";
    name = "grit-from-flake-0.1.0";
    outPath = "/nix/store/00000000000000000000000000000000-grit-from-flake-0.1.0";
    meta.mainProgram = "grit";
  };
  outputs = flake.outputs {
    self = outputs // {
      packages.x86_64-linux.default = fakeGrit;
    };
    nixpkgs = { inherit lib; };
  };
in
outputs.nixosModules.default
