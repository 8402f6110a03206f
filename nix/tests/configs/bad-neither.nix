# NEGATIVE: neither manifest nor settings; the assertion must fail (exit 2).
{
  services.grit.pipelines.empty.startAt = "daily";
}
