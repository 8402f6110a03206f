# The grit package: the `grit` binary plus the shell completions (bash, zsh,
# fish) and the man page that the binary itself prints at install time.
# Called by flake.nix (`packages`, `overlays.default`) with callPackage.
{
  lib,
  stdenv,
  rustPlatform,
  installShellFiles,
}:

let
  cargoToml = lib.importTOML ../Cargo.toml;
in
rustPlatform.buildRustPackage {
  pname = "grit";
  inherit (cargoToml.package) version;

  # Only what cargo reads: editing flake.nix, nix/, docs or CI files must not
  # rebuild grit. Optional directories may not exist yet.
  src = lib.fileset.toSource {
    root = ../.;
    fileset = lib.fileset.unions [
      ../Cargo.toml
      ../Cargo.lock
      ../src
      (lib.fileset.maybeMissing ../build.rs)
      (lib.fileset.maybeMissing ../tests)
      (lib.fileset.maybeMissing ../benches)
      (lib.fileset.maybeMissing ../examples)
      (lib.fileset.maybeMissing ../README.md)
    ];
  };

  cargoLock.lockFile = ../Cargo.lock;

  # rusqlite is built with `bundled` (its own SQLite, compiled with cc) and
  # fuser/tracing-journald are pure Rust, so no libraries are linked in.
  nativeBuildInputs = [ installShellFiles ];

  # Only the unit tests of the binary (`cargo test --bins`) run here. The
  # integration tests in tests/ drive the real binary through its task
  # sandbox: user/mount/pid/net namespaces, pivot_root, a fresh /proc and a
  # FUSE mount on /dev/fuse. The Nix build sandbox has no /dev/fuse, and
  # whether it lets a build create nested user namespaces and mount proc
  # depends on the builder's kernel and Nix settings, so those tests cannot be
  # relied on here. They run in CI (.ci/run, as root) and the sandbox is
  # exercised under systemd by the NixOS VM tests (flake `checks`).
  cargoTestFlags = [ "--bins" ];

  # `grit completions SHELL` and `grit man` print to stdout. When cross
  # compiling the binary cannot run on the build machine, so skip them then.
  postInstall = lib.optionalString (stdenv.buildPlatform.canExecute stdenv.hostPlatform) ''
    installShellCompletion --cmd grit \
      --bash <($out/bin/grit completions bash) \
      --zsh <($out/bin/grit completions zsh) \
      --fish <($out/bin/grit completions fish)
    $out/bin/grit man > grit.1
    installManPage grit.1
  '';

  meta = {
    description = cargoToml.package.description;
    homepage = cargoToml.package.repository;
    license = lib.licenses.mit;
    mainProgram = "grit";
    # Namespaces, landlock and FUSE: Linux only.
    platforms = lib.platforms.linux;
  };
}
