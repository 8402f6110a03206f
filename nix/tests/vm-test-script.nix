# Renders one nixos-tests/*.nix with stand-ins so check.sh can inspect it
# offline: the harness's stub pkgs (fake packages with plausible store
# paths), `testers.runNixOSTest` as the identity, and a marker for
# `self.nixosModules.default`. Returns the test's name, whether its `machine`
# node imports the module, and the testScript text (for a Python syntax
# check). Nothing here runs a VM.
{
  libPath,
  harness,
  file,
}:
let
  lib = import libPath;
  stub = import (harness + "/stubs/pkgs.nix") { inherit lib; };
  pkgs =
    stub
    // {
      inherit lib;
      testers.runNixOSTest = t: t;
      writeTextDir =
        path: text:
        stub.mkFakePackage {
          pname = builtins.baseNameOf path;
          version = "dir";
        };
    }
    // lib.genAttrs [ "python3" "gawk" "sqlite" ] (n: stub.mkFakePackage { pname = n; });
  marker = {
    gritModuleMarker = true;
  };
  self.nixosModules.default = marker;
  test = import file { inherit self pkgs; };
  nodeConfig = {
    networking.primaryIPAddress = "192.168.1.1";
  };
  machine = test.nodes.machine;
  machineModule =
    if builtins.isFunction machine then
      machine {
        inherit pkgs lib;
        config = nodeConfig;
        nodes.machine = nodeConfig;
      }
    else
      machine;
in
{
  inherit (test) name;
  importsModule = builtins.any (m: m == marker) (machineModule.imports or [ ]);
  testScript =
    if builtins.isFunction test.testScript then
      test.testScript { nodes.machine = nodeConfig; }
    else
      test.testScript;
}
