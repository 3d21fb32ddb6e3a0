// For the console's time travel (herald.config.json "views"): how an order stream folds into its state.
import { orderDecider } from './order.ts';

export const initialState = orderDecider.initialState;
export const evolve = orderDecider.evolve;
