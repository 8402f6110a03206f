# VM test: a pipeline given as Nix attrs (`settings`), rendered to TOML with
# nulls removed, with `path`, `environment` and a root-only
# `environmentFile` reaching the scripts.
{ self, pkgs }:
pkgs.testers.runNixOSTest {
  name = "grit-settings";

  nodes.machine =
    { pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      environment.systemPackages = [ pkgs.jq ];

      environment.etc."grit/report.env" = {
        text = "API_TOKEN=s3cret\n";
        mode = "0400";
      };

      services.grit.pipelines.report = {
        settings = {
          pipeline = {
            timeout = "5m";
            retries = null;
          };
          step = [
            {
              name = "numbers";
              once = true;
              script = ''seq 1 5 > "$OUTPUT_DIR/numbers"'';
            }
            {
              name = "sum";
              inputs = [ "numbers" ];
              timeout = null;
              script = ''awk '{ s += $1 } END { print s }' "$INPUT_FILE" > "$OUTPUT_DIR/sum"'';
            }
            {
              name = "greet";
              once = true;
              script = ''printf '%s|%s' "$GREETING" "$API_TOKEN" > "$OUTPUT_DIR/greeting"'';
            }
          ];
        };
        path = [ pkgs.gawk ];
        environment.GREETING = "hello from nix";
        environmentFile = "/etc/grit/report.env";
      };
    };

  testScript = ''
    def content(name):
        h = machine.succeed(
            "grit-report resources --json | jq -r '.resources[] | select(.live and .name == \"" + name + "\") | .hash'"
        ).strip()
        assert h, f"{name} is live"
        return machine.succeed(f"grit-report cat {h}")

    machine.wait_for_unit("multi-user.target")

    with subtest("the rendered manifest"):
        manifest = machine.succeed(
            "systemctl show grit-report.service -p ExecStart --value"
            " | grep -o '/nix/store/[^ ]*-grit-report.toml' | head -1"
        ).strip()
        machine.succeed(f"grep -x 'name = \"report\"' {manifest}")
        machine.fail(f"grep -i null {manifest}")
        machine.succeed("grit-report validate")

    with subtest("the pipeline runs with path, environment and environmentFile"):
        machine.succeed("systemctl start grit-report.service")
        assert content("sum").strip() == "15", content("sum")
        assert content("greeting") == "hello from nix|s3cret", content("greeting")
  '';
}
