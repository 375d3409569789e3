"""`smap evaluate`: the paper's evaluation suites, scored for one or more systems, with a report.

suites.py  which suites and splits exist, where their feature stores live, how to make them
metrics.py WER, BLEU, chrF, COMET, language adherence, judged / exact-choice / exact-match accuracy
run.py     the loop over splits x systems: outputs, scores, problems
report.py  results.json, results.md, the chart and the screen table
"""
