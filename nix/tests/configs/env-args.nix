# environmentFile, extraArgs, parallel and a timerConfig override.
{
  services.grit.pipelines.ingest = {
    manifest = ../manifests/nightly.toml;
    environmentFile = "/run/secrets/ingest.env";
    extraArgs = [
      "--max-tasks"
      "500"
      "--json"
    ];
    parallel = 4;
    startAt = "*:0/15";
    timerConfig = {
      Persistent = false;
      RandomizedDelaySec = "2m";
    };
  };
}
