# Two served pipelines (a manifest file and Nix settings) with their server
# keys, one pipeline left to its timer, a routable privileged port with the
# firewall opened, the admin's own token secret and extra server settings.
{ pkgs, ... }:
{
  imports = [ ../probe-firewall.nix ];
  users.groups.analysts = { };

  services.grit.server = {
    enable = true;
    pipelines = [
      "etl"
      "report"
    ];
    listen = "0.0.0.0:443";
    openFirewall = true;
    tokenSecretFile = "/run/secrets/grit-token-secret";
    settings = {
      shutdown_timeout = "5m";
      request_timeout = "1m";
    };
  };

  services.grit.pipelines.etl = {
    manifest = ../manifests/nightly.toml;
    group = "analysts";
    parallel = 2;
    path = [ pkgs.curl ];
    environment.TZ = "UTC";
    environmentFile = "/run/secrets/etl.env";
    serverSettings = {
      queue_limit = 10;
      queue_strategy = "replace";
      start_delay = "5s";
      schedule = [
        "*/15 * * * *"
        "every 10m"
      ];
      watch = "/srv/incoming";
      keep_runs = 100;
      keep_days = 30;
      params.region = "eu";
    };
  };

  services.grit.pipelines.report = {
    settings = {
      pipeline.read_write = [ "/srv/exports" ];
      step = [
        {
          name = "numbers";
          script = "seq 1 5 > \"$OUTPUT_DIR/numbers\"";
        }
      ];
    };
    dataDir = "/srv/grit/report";
    path = [ pkgs.gawk ];
    environment.TZ = "UTC";
    serverSettings.queue_limit = 0;
  };

  # Not served: keeps its oneshot unit and timer; its server keys are
  # ignored with a warning.
  services.grit.pipelines.nightly = {
    manifest = ../manifests/nightly.toml;
    startAt = "daily";
    serverSettings.queue_limit = 3;
  };
}
