# VM test: services.grit.server. On `machine` the server listens on TCP with
# the firewall opened; `client` talks to it over the network with curl:
# /healthz needs no token, everything else answers 401 without one; a token
# from `grit-token` triggers runs (POST /api/v1/pipelines/NAME/runs) that are
# polled until they succeed, with the parameters of serverSettings.params
# and of the request; a viewer token may read but not trigger. A graceful
# restart in the middle of a run lets it finish; a crash (SIGKILL of the
# whole unit) in the middle of a run is restarted by systemd
# (Restart=on-failure) and the run is resumed and succeeds. On `sock` the
# API is a unix socket owned by grit-server.socket, which outlives the
# service.
{ self, pkgs }:
let
  port = 9009;
  helloDir = pkgs.writeTextDir "hello.toml" ''
    [pipeline]
    name = "hello"

    [pipeline.params]
    who = { default = "world", description = "whom to greet" }

    # A source: it runs on every run.
    [[step]]
    name = "greet"
    params = ["who"]
    script = """
    echo "hello $GRIT_PARAM_WHO" > "$OUTPUT_DIR/greeting"
    """
  '';
  slowDir = pkgs.writeTextDir "slow.toml" ''
    [pipeline]
    name = "slow"

    # A source that takes a while, so that the server can be restarted and
    # crashed in the middle of it.
    [[step]]
    name = "nap"
    script = """
    sleep 10
    date +%s%N > "$OUTPUT_DIR/woke"
    """
  '';
  common =
    { config, pkgs, ... }:
    {
      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
        config.services.grit.package
      ];
      services.grit.pipelines.hello = {
        manifest = "${helloDir}/hello.toml";
        serverSettings.params.who = "nixos";
      };
    };
in
pkgs.testers.runNixOSTest {
  name = "grit-server";

  nodes.machine =
    { ... }:
    {
      imports = [
        self.nixosModules.default
        common
      ];
      services.grit.server = {
        enable = true;
        listen = "0.0.0.0:${toString port}";
        openFirewall = true;
        # Long enough for the graceful restart to let the nap finish.
        settings.shutdown_timeout = "2m";
      };
      services.grit.pipelines.slow.manifest = "${slowDir}/slow.toml";
      # Not served: keeps its oneshot unit.
      services.grit.pipelines.manual = {
        manifest = "${helloDir}/hello.toml";
      };
      services.grit.server.pipelines = [
        "hello"
        "slow"
      ];
    };

  nodes.client =
    { pkgs, ... }:
    {
      environment.systemPackages = [
        pkgs.curl
        pkgs.jq
      ];
    };

  nodes.sock =
    { ... }:
    {
      imports = [
        self.nixosModules.default
        common
      ];
      services.grit.server = {
        enable = true;
        listen = "unix:/run/grit-server/api.sock";
        socketActivation = true;
      };
    };

  testScript = ''
    import json
    import shlex

    api = "http://machine:${toString port}/api/v1"


    def http(node, method, path, token=None, body=None, base=api, extra=""):
        """One request; returns (status, parsed JSON body or None)."""
        cmd = f"curl -sS {extra} -o /tmp/body -w '%{{http_code}}' -X {method} {shlex.quote(base + path)}"
        if token is not None:
            cmd += " -H " + shlex.quote(f"Authorization: Bearer {token}")
        if body is not None:
            cmd += " -H 'Content-Type: application/json' -d " + shlex.quote(json.dumps(body))
        code = int(node.succeed(cmd).strip())
        text = node.succeed("cat /tmp/body")
        return code, (json.loads(text) if text.strip() else None)


    def error_shape(body):
        assert isinstance(body, dict) and body["error"]["code"] and body["error"]["message"], body


    def wait_for_run(node, run, token, jq_filter, base=api, extra=""):
        """Polls GET /runs/ID until jq_filter holds; returns the run."""
        url = shlex.quote(f"{base}/runs/{run}")
        auth = shlex.quote(f"Authorization: Bearer {token}")
        node.wait_until_succeeds(
            f"curl -fsS {extra} -H {auth} {url} | jq -e {shlex.quote(jq_filter)}", timeout=180
        )
        return json.loads(node.succeed(f"curl -fsS {extra} -H {auth} {url}"))


    def trigger(node, pipeline, token, params=None, base=api, extra=""):
        code, body = http(node, "POST", f"/pipelines/{pipeline}/runs", token, {"params": params or {}}, base, extra)
        assert code == 202, (code, body)
        return body["run_id"]


    def contents(node, cmd, name):
        """The contents of every resource NAME in a pipeline's store (grit-<pipeline>)."""
        hashes = node.succeed(
            f"{cmd} resources --all --json | jq -r '.resources[] | select(.name == \"{name}\") | .hash'"
        ).split()
        return {node.succeed(f"{cmd} cat {h}").strip() for h in hashes}


    start_all()
    machine.wait_for_unit("grit-server.service")
    machine.wait_for_open_port(${toString port})
    client.wait_for_unit("multi-user.target")

    with subtest("one hardened service serves the listed pipelines"):
        machine.succeed("systemctl show grit-server.service -p User --value | grep -x grit")
        machine.succeed("systemctl show grit-server.service -p NoNewPrivileges --value | grep -x yes")
        machine.succeed("systemctl show grit-server.service -p ProtectSystem --value | grep -x strict")
        machine.succeed("test -z \"$(systemctl show grit-server.service -p CapabilityBoundingSet --value)\"")
        # served pipelines have no unit of their own; the other one keeps it
        machine.fail("systemctl cat grit-hello.service")
        machine.fail("systemctl cat grit-slow.service")
        machine.succeed("systemctl cat grit-manual.service")
        # the secret grit created on first start: the server's alone
        machine.succeed("stat -c '%a %U' /var/lib/grit-server/token-secret | grep -x '600 grit'")

    with subtest("healthz needs no token; everything else answers 401 without a valid one"):
        code, _ = http(client, "GET", "/healthz")
        assert code == 200, code
        code, body = http(client, "POST", "/pipelines/hello/runs", body={"params": {}})
        assert code == 401, (code, body)
        error_shape(body)
        code, body = http(client, "GET", "/runs")
        assert code == 401, (code, body)
        code, body = http(client, "GET", "/runs", token="not.a.jwt")
        assert code == 401, (code, body)

    with subtest("grit-token mints tokens; so does grit token --config as the server's user"):
        operator = machine.succeed("grit-token --role operator --ttl 1h").strip()
        viewer = machine.succeed("grit-token --role viewer --ttl 1h").strip()
        assert operator.count(".") == 2 and viewer.count(".") == 2, (operator, viewer)
        documented = machine.succeed(
            "runuser -u grit -- grit token --role viewer --config /etc/grit/server.toml"
        ).strip()
        code, _ = http(client, "GET", "/pipelines", token=documented)
        assert code == 200, code

    with subtest("a viewer reads but does not trigger"):
        code, body = http(client, "GET", "/pipelines", token=viewer)
        assert code == 200, (code, body)
        code, body = http(client, "POST", "/pipelines/hello/runs", viewer, {"params": {}})
        assert code == 403, (code, body)
        error_shape(body)
        code, body = http(client, "POST", "/pipelines/manual/runs", operator, {"params": {}})
        assert code == 404, ("a pipeline the server does not serve", code, body)

    with subtest("trigger over HTTP and poll until the run succeeded"):
        run = trigger(client, "hello", operator)
        r = wait_for_run(client, run, operator, '.status == "succeeded"')
        assert not r.get("resumed"), r
        # serverSettings.params.who is the default of the server's runs
        assert contents(machine, "grit-hello", "greeting") == {"hello nixos"}
        run = trigger(client, "hello", operator, {"who": "curl"})
        wait_for_run(client, run, operator, '.status == "succeeded"')
        assert contents(machine, "grit-hello", "greeting") == {"hello nixos", "hello curl"}

    with subtest("a graceful restart in the middle of a run lets the run finish"):
        run = trigger(client, "slow", operator)
        wait_for_run(client, run, operator, '.status == "running"')
        machine.sleep(2)
        # SIGTERM: grit serve stops accepting and lets the run finish (shutdown_timeout)
        machine.succeed("systemctl restart grit-server.service")
        machine.wait_for_open_port(${toString port})
        r = wait_for_run(client, run, operator, '.status == "succeeded"')
        assert not r.get("resumed"), r

    with subtest("a crash in the middle of a run: systemd restarts the server, the run resumes and succeeds"):
        before = int(machine.succeed("systemctl show grit-server.service -p NRestarts --value"))
        run = trigger(client, "slow", operator)
        wait_for_run(client, run, operator, '.status == "running"')
        machine.sleep(2)
        # SIGKILL to every process of the unit, tasks included: a crash
        machine.succeed("systemctl kill --signal=SIGKILL grit-server.service")
        machine.wait_until_succeeds(
            f"test $(systemctl show grit-server.service -p NRestarts --value) -gt {before}", timeout=60
        )
        machine.wait_for_unit("grit-server.service")
        machine.wait_for_open_port(${toString port})
        r = wait_for_run(client, run, operator, '.status == "succeeded" and .resumed == true')
        # the graceful run's nap and the resumed run's (the killed one published nothing)
        assert len(contents(machine, "grit-slow", "woke")) == 2, contents(machine, "grit-slow", "woke")

    with subtest("unix socket owned by grit-server.socket"):
        sock.wait_for_unit("grit-server.socket")
        sock.wait_for_unit("grit-server.service")
        sock.succeed("stat -c '%a %U %G' /run/grit-server/api.sock | grep -x '660 grit grit'")
        unix = "--unix-socket /run/grit-server/api.sock"
        base = "http://localhost/api/v1"
        code, _ = http(sock, "GET", "/healthz", base=base, extra=unix)
        assert code == 200, code
        token = sock.succeed("grit-token --role operator").strip()
        code, _ = http(sock, "GET", "/runs", base=base, extra=unix)
        assert code == 401, code
        # The socket outlives the service: a request while it is stopped
        # starts it and is answered.
        sock.succeed("systemctl stop grit-server.service")
        sock.succeed("test -S /run/grit-server/api.sock")
        run = trigger(sock, "hello", token, base=base, extra=unix + " --max-time 60")
        sock.succeed("systemctl is-active grit-server.service")
        wait_for_run(sock, run, token, '.status == "succeeded"', base=base, extra=unix)
        assert contents(sock, "grit-hello", "greeting") == {"hello nixos"}
  '';
}
