{
  description = "grit: run data pipelines made of shell scripts, sandboxed, content-addressed and incremental";

  inputs.nixpkgs.url = "github:NixOS/nixpkgs/nixos-unstable";

  outputs =
    { self, nixpkgs }:
    let
      inherit (nixpkgs) lib;
      systems = [
        "x86_64-linux"
        "aarch64-linux"
      ];
      forAllSystems = f: lib.genAttrs systems (system: f nixpkgs.legacyPackages.${system});

      # Every nixos-tests/*.nix is a VM test: `{ self, pkgs }: runNixOSTest …`.
      vmTests =
        pkgs:
        lib.mapAttrs' (
          file: _:
          lib.nameValuePair "nixos-${lib.removeSuffix ".nix" file}" (
            import (./nixos-tests + "/${file}") { inherit self pkgs; }
          )
        ) (lib.filterAttrs (f: t: t == "regular" && lib.hasSuffix ".nix" f) (builtins.readDir ./nixos-tests));
    in
    {
      packages = forAllSystems (
        pkgs:
        let
          grit = pkgs.callPackage ./nix/package.nix { };
        in
        {
          inherit grit;
          default = grit;
        }
      );

      apps = forAllSystems (pkgs: {
        default = {
          type = "app";
          program = lib.getExe self.packages.${pkgs.stdenv.hostPlatform.system}.default;
          meta.description = "grit, the pipeline runner";
        };
      });

      devShells = forAllSystems (pkgs: {
        default = pkgs.mkShell {
          packages = with pkgs; [
            rustc
            cargo
            clippy
            rustfmt
            rust-analyzer
            sqlite
            fuse3
            nixfmt
          ];
          RUST_SRC_PATH = "${pkgs.rustPlatform.rustLibSrc}";
        };
      });

      overlays.default = final: _prev: {
        grit = final.callPackage ./nix/package.nix { };
      };

      # The module declares `package = mkPackageOption pkgs "grit"`, which
      # needs pkgs.grit (nixpkgs or the overlay); through the flake it
      # defaults to this flake's package instead.
      nixosModules.grit =
        { lib, pkgs, ... }:
        {
          imports = [ ./nix/module.nix ];
          services.grit.package = lib.mkDefault self.packages.${pkgs.stdenv.hostPlatform.system}.default;
        };
      nixosModules.default = self.nixosModules.grit;

      checks = forAllSystems (
        pkgs: { grit = self.packages.${pkgs.stdenv.hostPlatform.system}.grit; } // vmTests pkgs
      );

      formatter = forAllSystems (pkgs: pkgs.nixfmt-tree);
    };
}
