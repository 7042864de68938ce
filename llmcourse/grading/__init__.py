"""Hidden-test logic of the course's nbgrader assignments.

Each assignment ``<name>`` has a module ``llmcourse.grading.<name>`` of check functions
that its hidden test cells call, e.g.::

    from llmcourse.grading import attention as G
    G.check_sdpa_values(scaled_dot_product_attention)

A check prints one line ``ok: ...`` on success and raises ``AssertionError`` with a
learner-facing message (naming the likely mistake where it can) on failure.
:mod:`llmcourse.grading.common` holds what every assignment uses: running learner code
quietly, refusing library calls that do the work, deterministic seeding.
"""
