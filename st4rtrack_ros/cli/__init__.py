"""The command-line tools, one module per command, each with its parser (``build_parser``) and
``main(argv=None) -> int``; the work is done in the library they call.

==========================  ============================  =========================================================
command                     module                        calls into
==========================  ============================  =========================================================
``st4rtrack-node``          ``cli.node``                  ``ros.node``
``st4rtrack-play``          ``cli.play``                  ``ros.play``
``st4rtrack-synth``         ``cli.synth``                 ``data.sequence``, ``data.bag_io``
``st4rtrack-eval``          ``cli.eval``                  ``pipeline``, ``evaluation``; ``--live``: ``ros.live_eval``
``st4rtrack-adapt``         ``cli.adapt``                 ``pipeline``, ``adaptation.worker``
``st4rtrack-study``         ``cli.study``                 ``evaluation.study``
``st4rtrack-train``         ``cli.train``                 ``training.loop``
``st4rtrack-real-bench``    ``cli.real_bench``            ``evaluation.real_benchmark``
==========================  ============================  =========================================================

The top layer of the package (test/test_architecture.py): a command may import anything, nothing in the package
imports a command (the demo aside). ``python -m st4rtrack_ros.cli.<module>`` runs one without installing.
"""
