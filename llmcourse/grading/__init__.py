"""Grading: the engine that runs submissions, and the hidden tests it runs.

The engine (grader side): :mod:`.batch` (``llmcourse grade``/``check``), :mod:`.worker`,
:mod:`.kernel`, :mod:`.sandbox`, :mod:`.executor`, :mod:`.scan`, and :mod:`.guard` (loaded
into every kernel).

The hidden tests (kernel side): each assignment ``<name>`` has a module
``llmcourse.grading.checks.<name>`` of check functions that its hidden test cells call::

    from llmcourse.grading.checks import attention as G
    G.check_sdpa_values(scaled_dot_product_attention)

A check prints one line ``ok: ...`` on success and raises ``AssertionError`` with a
learner-facing message (naming the likely mistake where it can) on failure.
:mod:`llmcourse.grading.common` holds what every assignment uses: running learner code
quietly, refusing library calls that do the work, deterministic seeding.
"""
