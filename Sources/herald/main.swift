import HeraldCLI

Herald.runFromProcess()
