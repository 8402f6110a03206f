# The manifest as Nix attrs: nulls dropped, read_write paths made writable,
# path and environment on the unit.
{ pkgs, ... }:
{
  services.grit.pipelines.report = {
    settings = {
      pipeline = {
        timeout = "10m";
        retries = null;
        read_write = [ "/srv/exports" ];
      };
      step = [
        {
          name = "numbers";
          once = true;
          script = "seq 1 5 > \"$OUTPUT_DIR/numbers\"";
          env = {
            UNUSED = null;
          };
        }
        {
          name = "sum";
          inputs = [ "numbers" ];
          script = "awk '{ s += $1 } END { print s }' \"$INPUT_FILE\" > \"$OUTPUT_DIR/sum\"";
          timeout = null;
          read_write = [ "/srv/cache" ];
        }
      ];
    };
    path = [ pkgs.gawk ];
    environment.GREETING = "hello from nix";
    startAt = "hourly";
  };
}
