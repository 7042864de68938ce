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

# Grade on when a submission kills or hangs its kernel (nbgrader's own executor gives up
# on the whole notebook), and load the tamper guard into every kernel before any cell.
from nbconvert.preprocessors import ClearMetadataPreprocessor  # noqa: E402
from nbgrader.preprocessors import (AssignLatePenalties, CheckCellMetadata, IgnorePattern,  # noqa: E402
                                    LimitOutput, SaveAutoGrades)

from llmcourse.grading.executor import ResilientExecute  # noqa: E402

c.Autograde.autograde_preprocessors = [ResilientExecute, IgnorePattern, ClearMetadataPreprocessor,
                                       LimitOutput, SaveAutoGrades, AssignLatePenalties, CheckCellMetadata]
c.Execute.extra_arguments = ["--ext=llmcourse.grading.guard"]
