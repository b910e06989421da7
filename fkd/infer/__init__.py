"""A trained run -> a submission: the fold ensemble with flip TTA, blends of runs, the CSV through IdLookupTable.csv.

    $ fkd predict runs/<run>            # fkd.infer.predict.predict_run
    $ fkd blend runs/<a> runs/<b>       # fkd.infer.blend.blend
"""
