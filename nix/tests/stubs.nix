# Stand-in declarations for the NixOS options nix/module.nix reads beyond
# what the harness stubs (shared/tools/nixos-module-eval) declare.
# Mirrors nixos/modules/security/misc.nix: a bool, default true.
{ lib, ... }:
{
  options.security.allowUserNamespaces = lib.mkOption {
    type = lib.types.bool;
    default = true;
  };
}
