# executor.slurm job settings with a manifest file: they belong in its [executor] table.
{
  services.grit.pipelines.filed = {
    manifest = ../manifests/nightly.toml;
    executor.slurm.partition = "batch";
  };
}
