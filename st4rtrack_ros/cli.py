"""Console entry points that span layers.

``st4rtrack-eval`` is offline evaluation (``evaluation/``) or, with ``--live``, a replay into the running node over DDS
(``ros/``). The choice is made here, above both, so the evaluation package never imports the ROS adapter.
"""

from __future__ import annotations

import sys


def eval_main(argv: list[str] | None = None) -> int:
    """``st4rtrack-eval BAG --out DIR [...]`` or ``st4rtrack-eval --live BAG --out DIR [...]``."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--live" in argv:
        from st4rtrack_ros.ros.live_eval import main as live_main

        return live_main([a for a in argv if a != "--live"])
    from st4rtrack_ros.evaluation.cli import main as offline_main

    return offline_main(argv)


if __name__ == "__main__":
    sys.exit(eval_main())
