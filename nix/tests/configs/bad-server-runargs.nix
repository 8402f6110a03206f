# NEGATIVE: a served pipeline keeps a timer (startAt, timerConfig) and
# `grit run` arguments, which the server would not use (exit 2).
{
  services.grit.server.enable = true;
  services.grit.pipelines.nightly = {
    manifest = ../manifests/nightly.toml;
    startAt = "daily";
  };
  services.grit.pipelines.hourly = {
    manifest = ../manifests/nightly.toml;
    timerConfig.RandomizedDelaySec = "5m";
    extraArgs = [ "--max-tasks" "10" ];
  };
}
