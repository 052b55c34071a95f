"""wrenlm.hub"""
