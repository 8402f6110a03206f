# Extra `pkgs` for check.sh's wrapper test (eval-module.sh --pkgs).
# The harness stub fakes writeShellScriptBin; here it becomes a real store
# file holding the script, and grit, coreutils and util-linux point into
# $GRIT_CHECK_ROOT, where check.sh puts a fake `grit` (prints its user,
# environment and argv) and the host's `id` and `setpriv`. That way the
# generated grit-<name> command can be run, not only parsed.
base:
let
  root = builtins.getEnv "GRIT_CHECK_ROOT";
  # No `out` attribute, so lib.getExe/getBin use this outPath.
  fake = pname: mainProgram: {
    type = "derivation";
    inherit pname mainProgram;
    name = "${pname}-check";
    outPath = "${root}/${pname}";
    meta.mainProgram = mainProgram;
  };
in
{
  writeShellScriptBin =
    name: text:
    base.writeShellScriptBin name text
    // {
      outPath = builtins.toFile name "#!${base.runtimeShell}\n${text}";
    };
}
// (
  if root == "" then
    { }
  else
    {
      grit = fake "grit" "grit";
      coreutils = fake "coreutils" "id";
      util-linux = fake "util-linux" "setpriv";
    }
)
