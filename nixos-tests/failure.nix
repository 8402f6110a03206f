# VM test: a failing step makes the unit's result "failed" (grit exits 1
# when a task failed); the fixed configuration, switched to through a
# specialisation, then succeeds.
{ self, pkgs }:
let
  manifestDir =
    ok:
    pkgs.writeTextDir "flaky.toml" ''
      [pipeline]
      name = "flaky"

      [[step]]
      name = "check"
      once = true
      script = """
      echo "checking, ok=${if ok then "yes" else "no"}"
      ${if ok then ''echo fine > "$OUTPUT_DIR/checked"'' else "exit 3"}
      """
    '';
in
pkgs.testers.runNixOSTest {
  name = "grit-failure";

  nodes.machine =
    { lib, pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      environment.systemPackages = [ pkgs.jq ];
      services.grit.pipelines.flaky.manifest = "${manifestDir false}/flaky.toml";
      specialisation.fixed.configuration = {
        services.grit.pipelines.flaky.manifest = lib.mkForce "${manifestDir true}/flaky.toml";
      };
    };

  testScript = ''
    machine.wait_for_unit("multi-user.target")

    with subtest("a failing step fails the unit"):
        machine.fail("systemctl start grit-flaky.service")
        machine.succeed("systemctl is-failed grit-flaky.service")
        machine.succeed("systemctl show grit-flaky.service -p Result --value | grep -x exit-code")
        machine.succeed("systemctl show grit-flaky.service -p ExecMainStatus --value | grep -x 1")
        machine.succeed("journalctl -u grit-flaky.service GRIT_STEP=check -o cat | grep -F 'checking, ok=no'")
        machine.fail("grit-flaky resources --json | jq -e '.resources[] | select(.name == \"checked\")'")

    with subtest("the fixed configuration succeeds"):
        machine.succeed("/run/booted-system/specialisation/fixed/bin/switch-to-configuration test")
        machine.succeed("systemctl start grit-flaky.service")
        machine.succeed("systemctl show grit-flaky.service -p Result --value | grep -x success")
        machine.fail("systemctl is-failed grit-flaky.service")
        machine.succeed("journalctl -u grit-flaky.service GRIT_STEP=check -o cat | grep -F 'checking, ok=yes'")
        machine.succeed(
            "grit-flaky resources --json"
            " | jq -e '[.resources[] | select(.live and .name == \"checked\")] | length == 1'"
        )
  '';
}
