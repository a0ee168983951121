
  # note
#COMMONS --nodes=0 --mem=-5 --time=abc
