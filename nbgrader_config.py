"""nbgrader settings for the course; run nbgrader from the repository root.

    nbgrader generate_assignment attention   # solutions/attention -> exercises/attention
    nbgrader autograde attention             # submitted/<student>/attention -> autograded/
"""
c = get_config()  # noqa: F821 (provided by nbgrader)

c.CourseDirectory.course_id = "llmcourse"
c.CourseDirectory.source_directory = "solutions"
c.CourseDirectory.release_directory = "exercises"

# Per-cell limit. nbgrader 0.9 ignores ExecutePreprocessor.timeout; Execute.timeout counts.
c.Execute.timeout = 60
c.Execute.interrupt_on_timeout = True

c.ClearSolutions.code_stub = {"python": "# YOUR CODE HERE\nraise NotImplementedError()"}
c.ClearSolutions.text_stub = "YOUR ANSWER HERE"

# A learner who deletes a test cell gets it back (re-added from the gradebook) and graded.
c.OverwriteCells.add_missing_cells = True
