# VM test: grit's journald records carry GRIT_PIPELINE, GRIT_RUN, GRIT_STEP,
# GRIT_TASK, GRIT_RESOURCE and GRIT_HASH, and the scripts' stdout/stderr
# lines carry their task's fields, so `journalctl -u grit-<name>
# GRIT_STEP=<step>` returns exactly that step's lines.
{ self, pkgs }:
let
  pipelineDir = pkgs.writeTextDir "logs.toml" ''
    [pipeline]
    name = "logs"

    [[step]]
    name = "fetch"
    once = true
    script = """
    echo fetch-stdout-line
    echo fetch-stderr-line >&2
    echo raw-data > "$OUTPUT_DIR/raw"
    """

    [[step]]
    name = "shout"
    inputs = ["raw"]
    script = """
    echo shout-stdout-line
    tr a-z A-Z < "$INPUT_FILE" > "$OUTPUT_DIR/loud"
    """
  '';
in
pkgs.testers.runNixOSTest {
  name = "grit-journald";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      environment.systemPackages = [ pkgs.jq ];
      services.grit.pipelines.logs.manifest = "${pipelineDir}/logs.toml";
    };

  testScript = ''
    machine.wait_for_unit("multi-user.target")
    machine.succeed("systemctl start grit-logs.service")
    u = "journalctl -u grit-logs.service "

    with subtest("GRIT_STEP=<step> returns that step's script lines, stdout and stderr"):
        fetch = machine.succeed(u + "GRIT_STEP=fetch -o cat")
        assert "fetch-stdout-line" in fetch and "fetch-stderr-line" in fetch, fetch
        assert "shout-stdout-line" not in fetch, fetch
        shout = machine.succeed(u + "GRIT_STEP=shout -o cat")
        assert "shout-stdout-line" in shout, shout
        assert "fetch-stdout-line" not in shout and "fetch-stderr-line" not in shout, shout

    with subtest("records carry the pipeline, run and task"):
        machine.succeed(
            u + "GRIT_STEP=fetch -o json"
            " | jq -s -e 'length > 0 and all(.GRIT_PIPELINE == \"logs\" and (.GRIT_RUN | length > 0))'"
        )
        # the script's own line carries its task's fields
        machine.succeed(
            u + "GRIT_STEP=fetch -o json"
            " | jq -s -e 'map(select(.MESSAGE | tostring | contains(\"fetch-stdout-line\")))"
            " | length == 1 and all((.GRIT_TASK | length > 0) and (.GRIT_RUN | length > 0))'"
        )

    with subtest("the published resource is logged with its name and hash"):
        raw = machine.succeed(
            "grit-logs resources --json | jq -r '.resources[] | select(.name == \"raw\") | .hash'"
        ).strip()
        assert raw, "raw was published"
        machine.succeed(
            u + f"GRIT_RESOURCE=raw GRIT_HASH={raw} -o json | jq -s -e 'length >= 1 and all(.GRIT_STEP == \"fetch\")'"
        )

    with subtest("the task id from the journal opens the task's log"):
        task = machine.succeed(
            u + "GRIT_STEP=shout -o json | jq -r 'select(.GRIT_TASK != null) | .GRIT_TASK' | head -1"
        ).strip()
        assert task, "a shout record has GRIT_TASK"
        machine.succeed(f"grit-logs log {task} | grep -F shout-stdout-line")
        loud = machine.succeed(
            "grit-logs resources --json | jq -r '.resources[] | select(.name == \"loud\") | .hash'"
        ).strip()
        machine.succeed(f"grit-logs why {loud} | grep -e raw -e {raw[:12]}")
  '';
}
