# VM test: a pipeline given as a manifest file runs under systemd as the
# grit user; `grit-nightly` lists its outputs; a second start executes no
# task (the source is `once = true`, the derived step is memoised).
{ self, pkgs }:
let
  pipelineDir = pkgs.writeTextDir "nightly.toml" ''
    [pipeline]
    name = "nightly"

    [[step]]
    name = "fetch"
    once = true
    script = """
    { echo alpha; echo beta; } > "$OUTPUT_DIR/words"
    """

    [[step]]
    name = "upper"
    inputs = ["words"]
    script = """
    tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/upper"
    """
  '';
in
pkgs.testers.runNixOSTest {
  name = "grit-basic";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      environment.systemPackages = [ pkgs.jq ];
      users.users.alice.isNormalUser = true;
      # bob may read the store: he is in the pipeline's group (grit run --group).
      users.users.bob = {
        isNormalUser = true;
        extraGroups = [ "grit" ];
      };

      services.grit.pipelines.nightly = {
        manifest = "${pipelineDir}/nightly.toml";
        # The run summary ({"run":…,"executed":N,…}) goes to stdout, so to
        # the journal: the test reads the number of executed tasks from it.
        extraArgs = [ "--json" ];
      };
    };

  testScript = ''
    import json

    def summaries():
        out = machine.succeed(
            "journalctl -u grit-nightly.service _TRANSPORT=stdout -o cat | grep '^{\"run\"' || true"
        )
        return [json.loads(line) for line in out.splitlines()]

    def live_hash(name):
        return machine.succeed(
            "grit-nightly resources --json | jq -r '.resources[] | select(.live and .name == \"" + name + "\") | .hash'"
        ).strip()

    machine.wait_for_unit("multi-user.target")

    with subtest("the unit is a oneshot run as the grit user, with no timer"):
        machine.succeed("systemctl show grit-nightly.service -p Type --value | grep -x oneshot")
        machine.succeed("systemctl show grit-nightly.service -p User --value | grep -x grit")
        machine.fail("systemctl cat grit-nightly.timer")
        assert summaries() == [], "nothing runs before the unit is started"

    with subtest("systemctl start runs the pipeline"):
        machine.succeed("systemctl start grit-nightly.service")
        machine.succeed("systemctl show grit-nightly.service -p Result --value | grep -x success")
        machine.succeed("stat -c %U /var/lib/grit/nightly/grit.sqlite | grep -x grit")
        # Shared with the pipeline's group, closed to everyone else.
        machine.succeed("stat -c %a:%G /var/lib/grit/nightly | grep -x 2750:grit")
        machine.succeed("stat -c %a /var/lib/grit/nightly/grit.sqlite | grep -x 640")
        machine.succeed("find /var/lib/grit/nightly -perm /o=rwx | grep -c . | grep -x 0")
        s = summaries()
        assert len(s) == 1 and s[0]["executed"] == 2 and s[0]["failed"] == 0, s

    with subtest("grit-nightly resources --json shows the outputs"):
        machine.succeed(
            "grit-nightly resources --json"
            " | jq -e '[.resources[] | select(.live) | .name] | sort == [\"upper\", \"words\"]'"
        )
        upper = live_hash("upper")
        machine.succeed(f"grit-nightly cat {upper} | paste -sd, - | grep -x ALPHA,BETA")

    with subtest("a second start executes 0 tasks"):
        machine.succeed("systemctl start grit-nightly.service")
        s = summaries()
        assert len(s) == 2 and s[1]["executed"] == 0 and s[1]["failed"] == 0, s
        assert live_hash("upper") == upper, "the live output is unchanged"

    with subtest("the admin command works for root, not for other users"):
        machine.succeed("grit-nightly validate")
        machine.succeed("grit-nightly status")
        machine.succeed("grit-nightly status --json | jq -e .")
        # alice is neither root nor grit: the wrapper goes through sudo,
        # which needs a password she cannot type here; the store is 2750.
        machine.fail("su - alice -c 'grit-nightly status < /dev/null'")
        machine.fail("su - alice -c 'ls /var/lib/grit/nightly'")
        # bob, in the group, reads the store as himself, but does not run the pipeline.
        machine.succeed("su - bob -c 'grit-nightly status < /dev/null'")
        machine.succeed(f"su - bob -c 'grit-nightly cat {upper}' | grep -x ALPHA")
        machine.fail("su - bob -c 'grit-nightly run < /dev/null'")
  '';
}
