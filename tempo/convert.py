"""`python -m tempo.convert checkpoint=<released .pth> zoo=<entry> [out=<file>]`: a released checkpoint of another
codebase (MMAction2 1.x, official TSM/TCM; entries in conf/zoo/) → a tempo checkpoint that `tempo.evaluate`,
`tempo.demo` and `model.network.init_checkpoint=` take (`tempo.run.released`)."""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from tempo import CONF_DIR
from tempo.run.frontdoor import user_errors
from tempo.run.released import convert


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="convert")
@user_errors
def main(cfg: DictConfig) -> None:
    convert(cfg)


if __name__ == "__main__":
    main()
