"""The hidden tests of each assignment: one module per assignment, named after it.

An assignment ``<name>``'s hidden test cells call the check functions of
``llmcourse.grading.checks.<name>``, e.g.::

    from llmcourse.grading.checks import attention as G
    G.check_sdpa_values(scaled_dot_product_attention)

The grading engine (batch, worker, kernel, sandbox, executor, guard) lives one level up,
in :mod:`llmcourse.grading`; what every check needs is in :mod:`llmcourse.grading.common`.
"""
