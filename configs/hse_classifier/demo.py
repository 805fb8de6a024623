"""hse_classifier on the synthetic demo data, on a trained demo HSE/FSE: `init=WORKDIR`."""

from configs.hse import base


def get_config(arg=None):
  return base.make_head("hse_classifier", ",".join(filter(None, ["demo", arg])), modality="frames",
                        data_dir="data/demo", val_split="val")
