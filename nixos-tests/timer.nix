# VM test: `startAt` makes a timer that is listed and fires (Persistent by
# default); `startAt = [ ]` makes none.
{ self, pkgs }:
let
  pipelineDir = pkgs.writeTextDir "tick.toml" ''
    [pipeline]
    name = "tick"

    # A source runs on every run, so each firing adds a resource.
    [[step]]
    name = "clock"
    script = """
    date +%s%N > "$OUTPUT_DIR/tick"
    """
  '';
in
pkgs.testers.runNixOSTest {
  name = "grit-timer";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      environment.systemPackages = [ pkgs.jq ];

      services.grit.pipelines.tick = {
        manifest = "${pipelineDir}/tick.toml";
        startAt = "*:*:0/5"; # every 5 seconds
        timerConfig.AccuracySec = "1s";
        extraArgs = [ "--json" ];
      };
      services.grit.pipelines.manual = {
        manifest = "${pipelineDir}/tick.toml";
        startAt = [ ];
      };
    };

  testScript = ''
    machine.wait_for_unit("multi-user.target")

    with subtest("the timer is listed"):
        machine.wait_for_unit("grit-tick.timer")
        machine.succeed("systemctl list-timers --all --no-pager | grep -F grit-tick.timer")
        machine.succeed("systemctl show grit-tick.timer -p Persistent --value | grep -x yes")
        machine.succeed("systemctl show grit-tick.timer -p TimersCalendar --value | grep -F '*:*:0/5'")

    with subtest("startAt = [ ] gives no timer, but the service exists"):
        machine.fail("systemctl cat grit-manual.timer")
        machine.fail("systemctl list-timers --all --no-pager | grep -F grit-manual")
        machine.succeed("systemctl cat grit-manual.service")

    with subtest("the timer fires, repeatedly"):
        machine.wait_until_succeeds(
            "test $(journalctl -u grit-tick.service _TRANSPORT=stdout -o cat | grep -c '^{\"run\"') -ge 2",
            timeout=120,
        )
        machine.succeed(
            "grit-tick resources --all --json | jq -e '[.resources[] | select(.name == \"tick\")] | length >= 2'"
        )
        machine.succeed("journalctl -u grit-tick.service _TRANSPORT=stdout -o cat | grep '^{\"run\"' | jq -s -e 'all(.failed == 0)'")
        # the manual pipeline never ran
        machine.fail("test -e /var/lib/grit/manual/grit.sqlite")
  '';
}
