"""Every hvt_jax dataset builder, registered with TFDS by importing this module.

    tfds build activitynet_captions --imports data_prep.datasets --config c3d_word \\
        --manual_dir MANUAL_DIR --data_dir DATA_DIR
    tfds.load("activitynet_captions/c3d_word", data_dir=DATA_DIR)  # after this import

`tfds build --imports` takes the modules that register a package of builders; this is ours.
Each builder's `MANUAL_DOWNLOAD_INSTRUCTIONS` names the files to place in `manual_dir`.
"""

from data_prep.activitynet_captions import ActivitynetCaptions
from data_prep.activitynet_labels import ActivitynetLabels
from data_prep.demo import Demo
from data_prep.didemo import Didemo
from data_prep.mmt_experts import ActivitynetExperts
from data_prep.mmt_experts import Lsmdc
from data_prep.mmt_experts import Msrvtt
from data_prep.tvr import Tvr

# TFDS name -> builder class.
BUILDERS = {cls.name: cls for cls in (ActivitynetCaptions, ActivitynetExperts, ActivitynetLabels,
                                      Demo, Didemo, Lsmdc, Msrvtt, Tvr)}
