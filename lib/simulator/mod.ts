/**
 * A simulated BIQU Panda Breath for tests, `panda-breath demo` and `panda-breath simulate`:
 * `device.ts` is the firmware as pure state, `simulator.ts` puts it on the network
 * (`Deno.serve`), `control.ts` answers its HTTP control endpoints, `cli.ts` runs it in the
 * foreground.
 *
 * @module
 */

export {
  BUTTON_ACTIONS,
  type ButtonAction,
  type DeviceModelOptions,
  type DeviceSettings,
  FAULT_FIELD_NAMES,
  FAULT_KINDS,
  type FaultField,
  type FaultKind,
  SIMULATOR_SECRETS,
  type SimulatorState,
  toDeviceByte,
} from "./device.ts";
export { type ReceivedFrame, Simulator, type SimulatorOptions } from "./simulator.ts";
export { runSimulatorCli, type SimulatorCliOptions } from "./cli.ts";
