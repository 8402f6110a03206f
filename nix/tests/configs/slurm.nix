# executor.slurm: `--executor slurm`, SLURM_CONF on the unit, and the job settings in the
# generated manifest's [executor] table.
{
  services.grit.pipelines.cluster = {
    dataDir = "/shared/grit/cluster";
    settings = {
      step = [
        {
          name = "numbers";
          once = true;
          script = "seq 1 5 > \"$OUTPUT_DIR/numbers\"";
        }
      ];
    };
    executor.slurm = {
      slurmConf = "/etc/slurm/slurm.conf";
      partition = "batch";
      time = "2h";
      max_jobs = 50;
      group_target = "1m";
      sbatch_args = [ "--qos=short" ];
    };
  };
}
