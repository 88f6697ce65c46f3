"""Released weights of other codebases (MMAction2 1.x, the official TSM and TCM releases) in tempo networks.

`reading` loads a released file safely; one module per source layout (`mmaction2`, `tsm_official`,
`tcm_official`) renames its keys to tempo's; `convert` detects the layout and checks that every tensor is
accounted for; `finetune` initialises a network's backbone from such a file (`model.network.init_checkpoint`);
`classes` ships the Kinetics-400 class names.
"""
