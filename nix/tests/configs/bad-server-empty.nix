# NEGATIVE: the server is enabled but there is no pipeline to serve (exit 2).
{
  services.grit.server.enable = true;
}
