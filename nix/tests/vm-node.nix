# Test-only configuration module for the harness: node $GRIT_VM_NODE of the
# VM test $GRIT_VM_TEST, so check.sh can evaluate what a VM test deploys
# (nix/module.nix with that node's settings, units verified) without
# booting it. `self.nixosModules.default` is empty here because the harness
# imports nix/module.nix itself; `pkgs` at the test's top level is the
# harness's stub (writeTextDir gives a plausible store path, not a file).
# Needs $NIXPKGS_LIB and $GRIT_HARNESS.
let
  lib = import (builtins.getEnv "NIXPKGS_LIB");
  stub = import (builtins.getEnv "GRIT_HARNESS" + "/stubs/pkgs.nix") { inherit lib; };
  pkgs = stub // {
    inherit lib;
    testers.runNixOSTest = t: t;
    writeTextDir =
      path: _text:
      stub.mkFakePackage {
        pname = builtins.baseNameOf path;
        version = "dir";
      };
  };
  test = import (builtins.getEnv "GRIT_VM_TEST") {
    inherit pkgs;
    self.nixosModules.default = { };
  };
in
{
  imports = [
    test.nodes.${builtins.getEnv "GRIT_VM_NODE"}
    ./probe-firewall.nix
  ];
}
