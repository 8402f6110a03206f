# startAt = [ ] means no timer; a disabled pipeline generates nothing; a
# string manifest path is used in place.
{
  services.grit.pipelines.manual = {
    manifest = "/etc/grit/manual.toml";
    startAt = [ ];
  };
  services.grit.pipelines.off = {
    enable = false;
    manifest = "/etc/grit/off.toml";
    startAt = "daily";
  };
}
