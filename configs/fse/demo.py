"""FSE on the synthetic demo dataset (`hvt-prepare demo`): what `hvt-demo` trains."""

from configs.hse import base


def get_config(arg=None):
  return base.make("fse", ",".join(filter(None, ["demo", arg])), modality="frames",
                         data_dir="data/demo")
