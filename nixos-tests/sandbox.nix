# VM test: under the service (its hardening included), grit's task sandbox
# holds. Steps that write outside OUTPUT_DIR, to places the service user
# itself may write (its own store, /dev/shm), or that reach a web server on
# the VM without `network = true`, fail; their task logs say why; nothing
# escapes. Control steps show the same actions succeed where allowed, and
# `--capture fuse` makes the run fail if the unit's hardening hid /dev/fuse.
{ self, pkgs }:
let
  port = 8080;
  canaryDir = pkgs.writeTextDir "canary" "chirp\n";
in
pkgs.testers.runNixOSTest {
  name = "grit-sandbox";

  nodes.machine =
    { config, pkgs, ... }:
    {
      imports = [ self.nixosModules.default ];
      environment.systemPackages = [
        pkgs.jq
        pkgs.curl
      ];

      # A web server on the VM's own address.
      systemd.services.canary = {
        wantedBy = [ "multi-user.target" ];
        serviceConfig.ExecStart = "${pkgs.python3}/bin/python3 -m http.server ${toString port} --directory ${canaryDir}";
      };
      networking.firewall.allowedTCPPorts = [ port ];

      services.grit.pipelines.jail = {
        settings.step = [
          {
            name = "in_bounds";
            once = true;
            script = ''echo ok > "$OUTPUT_DIR/allowed"'';
          }
          {
            name = "escape_store";
            once = true;
            script = "echo pwned > /var/lib/grit/jail/escaped";
          }
          {
            name = "escape_shm";
            once = true;
            script = "echo pwned > /dev/shm/escaped";
          }
          {
            name = "escape_net";
            once = true;
            script = ''curl -fsS --max-time 5 "$CANARY_URL" > "$OUTPUT_DIR/page"'';
          }
          {
            name = "allowed_net";
            once = true;
            network = true;
            script = ''curl -fsS --max-time 5 "$CANARY_URL" > "$OUTPUT_DIR/page_ok"'';
          }
        ];
        path = [ pkgs.curl ];
        environment.CANARY_URL = "http://${config.networking.primaryIPAddress}:${toString port}/canary";
        extraArgs = [
          "--capture"
          "fuse"
        ];
      };
    };

  testScript =
    { nodes, ... }:
    ''
      import re

      url = "http://${nodes.machine.networking.primaryIPAddress}:${toString port}/canary"
      machine.wait_for_unit("canary.service")
      machine.wait_for_open_port(${toString port})
      # outside grit the canary is reachable and the targets are writable
      machine.succeed(f"curl -fsS {url} | grep -x chirp")
      machine.succeed("su -s /bin/sh grit -c 'touch /dev/shm/probe' && rm /dev/shm/probe")

      with subtest("escaping steps fail, so the unit fails"):
          machine.fail("systemctl start grit-jail.service")
          machine.succeed("systemctl show grit-jail.service -p Result --value | grep -x exit-code")

      with subtest("allowed work succeeded (through FUSE capture)"):
          machine.succeed(
              "grit-jail resources --json"
              " | jq -e '[.resources[] | select(.live) | .name] | sort == [\"allowed\", \"page_ok\"]'"
          )
          h = machine.succeed(
              "grit-jail resources --json | jq -r '.resources[] | select(.name == \"page_ok\") | .hash'"
          ).strip()
          machine.succeed(f"grit-jail cat {h} | grep -x chirp")

      with subtest("nothing escaped"):
          machine.fail("test -e /var/lib/grit/jail/escaped")
          machine.fail("test -e /dev/shm/escaped")

      with subtest("the failed tasks' logs say why"):
          why = {
              "escape_store": r"(?i)read-only|permission denied|no such file",
              "escape_shm": r"(?i)read-only|permission denied|no such file",
              "escape_net": r"(?i)connect|unreachable|resolve",
          }
          for step, pattern in why.items():
              task = machine.succeed(
                  f"journalctl -u grit-jail.service GRIT_STEP={step} -o json"
                  " | jq -r 'select(.GRIT_TASK != null) | .GRIT_TASK' | head -1"
              ).strip()
              assert task, f"{step}: no task in the journal"
              log = machine.succeed(f"grit-jail log {task}")
              assert re.search(pattern, log), f"{step}: {log!r}"
          # the status lists failures (text format: any mention of "fail")
          machine.succeed("grit-jail status | grep -i fail")
    '';
}
